"""What the analysis stage's decompositions cost per layer at Llama-2-7B's shapes, and how far each
route is from the dense SVD (docs/analysis.md, "Cost").

    python scripts/analysis_cost.py [--rank 16] [--update 0.01] [--dense]

Per shape: W0 a Gaussian matrix (a flat spectrum at the top, which is the slow case for Krylov
iteration; trained weights have a steeper one), Delta W = B A of the given rank scaled to
`--update` of ||W0||_F. Times: W0 by the Gram route (a cache miss), W0 read from the cache (a hit),
W_tuned's top `intruder_k` in W0's coordinates (decompose.low_rank_update_top), the update's SVD
from its factors, and with `--dense`
the dense SVDs they replace, with the largest differences between the two. The whole pass is
derived from the per-layer times (128 square, 64 tall and 32 wide layers), not timed as a whole.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from bench.analysis import decompose, spectra, w0_cache
from bench.config import AnalysisConfig

# Llama-2-7B's linear layers: (d_out, d_in) -> layers of that shape in its 32 blocks
SHAPES = {(4096, 4096): 128, (11008, 4096): 64, (4096, 11008): 32}


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--update", type=float, default=0.01, help="||Delta W||_F / ||W0||_F")
    ap.add_argument("--dense", action="store_true", help="also time the dense SVDs and compare")
    args = ap.parse_args()
    acfg = AnalysisConfig()
    os.environ["BENCH_CACHE"] = tempfile.mkdtemp(prefix="analysis-cost-")
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; rank {args.rank}, update {args.update}")
    print("| shape | layers | W0 gram (miss) | W0 cache hit | W_tuned top k | factors | routes | check |")
    print("|---|---|---|---|---|---|---|---|")
    totals = {"miss": 0.0, "hit": 0.0, "krylov": 0.0, "factors": 0.0, "dense": 0.0}
    for (d_out, d_in), n in SHAPES.items():
        w0 = torch.randn(d_out, d_in, generator=g) / d_in**0.5
        B, A = torch.randn(d_out, args.rank, generator=g), torch.randn(args.rank, d_in, generator=g)
        B *= args.update * float(torch.linalg.matrix_norm(w0)) / float(torch.linalg.matrix_norm(B @ A))
        (miss, _), t_miss = timed(w0_cache.w0_basis, w0, acfg.top_k)
        (hit, was_hit), t_hit = timed(w0_cache.w0_basis, w0, acfg.top_k)
        assert was_hit
        tuned_w = w0.double() + B.double() @ A.double()
        tuned, t_kry = timed(decompose.low_rank_update_top, w0, hit, B, A, acfg.intruder_k)
        _, t_fac = timed(spectra.factored_svd, B, A)
        row = dict(miss=t_miss, hit=t_hit, krylov=t_kry, factors=t_fac)
        for k, v in row.items():
            totals[k] += n * v
        print(
            f"| {d_out} x {d_in} | {n} | {t_miss:.1f} s | {t_hit:.2f} s | {t_kry:.1f} s | {1e3 * t_fac:.1f} ms | "
            f"w0 {miss.route}, tuned {tuned.route} | {max(miss.error, tuned.error):.1e} |"
        )
        if args.dense:
            ref, t_dense = timed(decompose.dense, w0)
            ref_t, t_dense_t = timed(decompose.dense, tuned_w, acfg.intruder_k)
            totals["dense"] += n * (t_dense + t_dense_t)
            ds = float((miss.S - ref.S).abs().max() / ref.S[0])
            sims = spectra.intruders(miss.U, tuned.U, acfg.intruder_epsilon)[1]
            sims_ref = spectra.intruders(ref.U, ref_t.U, acfg.intruder_epsilon)[1]
            dsim = max(abs(a - b) for a, b in zip(sims, sims_ref))
            print(
                f"|   dense SVDs | | {t_dense:.1f} s (W0) | | {t_dense_t:.1f} s (W_tuned) | | "
                f"max |S - S_dense| / s_1 {ds:.1e} | intruder similarities within {dsim:.1e} |"
            )
    m = 60.0
    print(
        f"\n224 layers, derived: first job {(totals['miss'] + totals['krylov'] + totals['factors']) / m:.1f} min "
        f"(W0 {totals['miss'] / m:.1f}, Krylov {totals['krylov'] / m:.1f}, factors {totals['factors']:.1f} s); "
        f"a later job {(totals['hit'] + totals['krylov'] + totals['factors']) / m:.1f} min"
        + (f"; dense SVDs {totals['dense'] / m:.1f} min" if args.dense else "")
    )


if __name__ == "__main__":
    main()
