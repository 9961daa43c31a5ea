"""What a study commits of its runs: every result.json and a compressed copy of every items file.

The study's root lives in the repository. Its `.gitignore` (written here) keeps adapters,
checkpoints, logs and plain items files out of git and lets `result.json` and `items.jsonl.gz`
in, so that a fresh clone holds every finished run: `bench.study report` recomputes every verdict
from them (bench.items.read reads the compressed copy where the plain file is absent) and
`bench.study run` skips them as finished jobs, so a study stopped on one machine resumes on another.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from bench import items

IGNORE = """\
# bench/study/pack.py: only what re-checks a run is committed (result.json, items.jsonl.gz)
*
!*/
!.gitignore
!result.json
!items.jsonl.gz
"""


def pack(root: Path) -> int:
    """Write the root's .gitignore and an `items.jsonl.gz` beside every `items.jsonl` that lacks an
    up-to-date one (byte-stable: no timestamp or name in the gzip header). Returns the bytes
    committed under the root."""
    root = Path(root)
    if not root.exists():
        return 0
    ignore = root / ".gitignore"
    if not ignore.exists() or ignore.read_text() != IGNORE:
        ignore.write_text(IGNORE)
    for plain in root.rglob(items.FILE):
        packed = plain.with_name(plain.name + ".gz")
        if packed.exists() and packed.stat().st_mtime >= plain.stat().st_mtime:
            continue
        data = plain.read_bytes()
        with open(packed, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
            f.write(data)
    return committed_bytes(root)


def committed_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file() and _committed(p))


def _committed(path: Path) -> bool:
    return path.name in ("result.json", items.FILE + ".gz", ".gitignore")
