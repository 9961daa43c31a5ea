"""W0's singular vectors, kept on disk between the jobs of a sweep.

Every job on one base model analyses the same W0 matrices, and their decomposition is the stage's
whole cost at 7B (docs/analysis.md, "Cost"), so the first job writes it and the others read it.
An entry is named by the BLAKE2 hash of W0's float32 bytes and shape, so a different checkpoint,
revision or layer can never be served another's vectors; it holds U and S in float64, with the
route and check that made them (rounding U to float32 would perturb W0's Gram matrix by about
1e-7 s_1^2 in every entry, enough to turn the top vectors of a flat spectrum in the W_tuned route
of decompose.low_rank_update_top). V's top k are rebuilt on reading for any k
(decompose.right_vectors). Entries live under `cache_dir()/analysis/w0/` (`BENCH_CACHE`);
`analysis.w0_cache=false` neither reads nor writes them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

import torch

from bench.analysis import decompose
from bench.models.sources import cache_dir

FORMAT = 3  # bumped when an entry's contents change meaning (or decompose's checks change)

log = logging.getLogger("bench.analysis")


def directory() -> Path:
    return cache_dir() / "analysis" / "w0"


def key(w0: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=20)
    h.update(f"v{FORMAT}:{tuple(w0.shape)}:".encode())
    h.update(w0.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def w0_basis(w0: torch.Tensor, top_k: int, use_cache: bool = True) -> tuple[decompose.Basis, bool]:
    """(W0's basis as decompose.w0_basis gives it, whether it came from the cache). Computed or
    read, the basis is built from the same entry, so a hit gives the figures a miss on the same
    device and libraries gives (an entry written on a GPU holds cuSOLVER's vectors)."""
    path = directory() / f"{key(w0)}.pt" if use_cache else None
    entry = _read(path) if path else None
    hit = entry is not None
    if not hit:
        basis = decompose.w0_basis(w0, top_k)
        entry = {"U": basis.U.cpu(), "S": basis.S.cpu(), "route": basis.route, "error": basis.error}
        if path:
            _write(path, entry)
    return _basis(w0, entry, top_k), hit


def _basis(w0: torch.Tensor, entry: dict, top_k: int) -> decompose.Basis:
    U = entry["U"].to(w0.device, torch.float64)
    S = entry["S"].to(w0.device, torch.float64)
    return decompose.Basis(U, S, decompose.right_vectors(w0, U, S, top_k), entry["route"], entry["error"])


ENTRY_KEYS = {"U", "S", "route", "error"}


def _read(path: Path):
    if not path.exists():
        return None
    try:
        entry = torch.load(path, weights_only=True)
    except Exception:  # a torn or foreign file is recomputed and replaced, never trusted
        return None
    return entry if isinstance(entry, dict) and set(entry) == ENTRY_KEYS else None


def _write(path: Path, entry: dict) -> None:
    """Written beside its name and renamed, so two jobs of a sweep never read half an entry. A
    cache that cannot be written (a full disk) costs the next job time, never this job's result."""
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(entry, tmp)
        os.replace(tmp, path)
    except OSError as err:
        log.warning("W0 cache entry not written (%s): %s", path, err)
        tmp.unlink(missing_ok=True)
