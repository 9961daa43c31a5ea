"""Offline stand-in training data for HumanEval: documented functions of the Python standard library.

Each example has HumanEval's shape: the prompt is a function's `def` line(s) and docstring, the
target is the rest of its body. Real, human-written Python that ships with every interpreter, so it
needs neither the hub nor a package. It is NOT Code-Feedback (the hub default) and contains no
HumanEval problem; which interpreter it came from, and a sha256 of the examples, go into result.json.

Selection, in a fixed order (files sorted by their path inside the standard library, functions in
source order): public top-level functions (`def`, not `async def`) without decorators, with a
docstring and at least one real statement after it, and at most MAX_BODY_LINES lines of body.
Test suites, site-packages and files that do not parse are skipped.
"""

from __future__ import annotations

import ast
import functools
import platform
import sysconfig
from pathlib import Path
from typing import Optional

from bench.provenance import rows_sha256

SKIPPED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
MAX_BODY_LINES = 40  # longer bodies rarely fit a short training sequence and are truncated anyway


def _trivial(statements: list[ast.stmt]) -> bool:
    """A body that is only `pass`, `...` or `raise NotImplementedError` teaches nothing."""
    if len(statements) != 1:
        return False
    s = statements[0]
    if isinstance(s, ast.Pass):
        return True
    if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and s.value.value is Ellipsis:
        return True
    if isinstance(s, ast.Raise) and s.exc is not None:
        exc = s.exc.func if isinstance(s.exc, ast.Call) else s.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def examples_from_source(source: str, file: str) -> list[dict]:
    """The examples one module contributes: {file, function, prompt, target}."""
    lines = source.splitlines(keepends=True)
    found = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef) or node.decorator_list or node.name.startswith("_"):
            continue
        if ast.get_docstring(node) is None or len(node.body) < 2:
            continue
        docstring, body = node.body[0], node.body[1:]
        if _trivial(body) or body[0].lineno <= docstring.end_lineno:  # `"""doc"""; x = 1` on one line
            continue
        if node.end_lineno - docstring.end_lineno > MAX_BODY_LINES:
            continue
        prompt = "".join(lines[node.lineno - 1 : docstring.end_lineno])
        target = "".join(lines[docstring.end_lineno : node.end_lineno])
        if not target.endswith("\n"):
            target += "\n"
        found.append({"file": file, "function": node.name, "prompt": prompt, "target": target})
    return found


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def extract(root: Path, limit: Optional[int] = None) -> tuple[list[dict], int, int]:
    """Examples from the modules under `root`, in path order (the first `limit` of them, reading no
    further file than needed); also how many files were read and how many did not parse."""
    files = sorted(
        (p for p in root.rglob("*.py") if not SKIPPED_DIRS & set(p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    examples, read, unparsable = [], 0, 0
    for path in files:
        if limit is not None and len(examples) >= limit:
            break
        read += 1
        try:
            examples.extend(examples_from_source(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix()))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            unparsable += 1
    return examples[:limit], read - unparsable, unparsable


@functools.lru_cache(maxsize=2)
def stdlib_examples(limit: Optional[int] = None) -> tuple[tuple[dict, ...], dict]:
    """The examples of the running interpreter's standard library (the first `limit`; all for None),
    and their provenance."""
    examples, files_read, unparsable = extract(stdlib_root(), limit)
    if not examples:
        raise RuntimeError(
            "found no documented function in the Python standard library; "
            "is this interpreter installed without its .py sources?"
        )
    info = {
        "name": "stdlib",
        "source": f"python-stdlib:{platform.python_implementation()}-{platform.python_version()}",
        "note": "offline stand-in, not Code-Feedback: signature + docstring -> body of documented functions "
        "from the Python standard library of the interpreter that ran this; contains no HumanEval problem",
        "python": platform.python_version(),
        "files_read": files_read,
        "files_unparsable": unparsable,
        "functions": len(examples),
        "functions_sha256": rows_sha256(examples),
    }
    return tuple(examples), info
