"""The singular spectrum of a weight update and how it sits against the pre-trained weight.

For one adapted matrix, W0 (pre-trained, d_out x d_in) and Delta W = W_tuned - W0:

- singular values s_1 >= s_2 >= ... of Delta W: the top k, and the energy share of the top k,
  sum_{i<=k} s_i^2 / sum_i s_i^2;
- stable rank ||Delta W||_F^2 / ||Delta W||_2^2 = sum s_i^2 / s_1^2;
- effective rank exp(H(p)) with p_i = s_i / sum_j s_j (Roy & Vetterli 2007);
- numerical rank: the number of s_i above s_1 * max(d_out, d_in) * eps (float32), the rank test
  numpy's matrix_rank uses;
- ||Delta W||_F / ||W0||_F;
- the overlap of Delta W's top-k left (right) singular subspace with W0's: the cosines of the
  principal angles between them are the singular values of U_dW^T U_0; reported as their mean square
  (1: the same subspace; a random k-dimensional subspace of R^d gives about k / d);
- intruder dimensions (Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of
  Equivalence"): among the top-k left singular vectors of W_tuned, those whose largest |cosine| with
  any of W0's left singular vectors (its top `reference_k`, all of them when None) is below epsilon.

Where Delta W = B A with thin factors (B: d_out x r, A: r x d_in), its SVD comes from the factors:
B = Q_B R_B, A^T = Q_A R_A, and the SVD of the r x r core R_B R_A^T = U' S V'^T gives
Delta W = (Q_B U') S (Q_A V')^T, at O((d_out + d_in) r^2) instead of O(d_out d_in min(d_out, d_in)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class SVD:
    """Delta W = U diag(S) V^T, singular values descending; only the non-trivial part."""

    U: torch.Tensor  # d_out x m
    S: torch.Tensor  # m
    V: torch.Tensor  # d_in x m


def dense_svd(delta: torch.Tensor) -> SVD:
    U, S, Vh = torch.linalg.svd(delta.double(), full_matrices=False)
    return SVD(U, S, Vh.T)


def factored_svd(B: torch.Tensor, A: torch.Tensor) -> SVD:
    """The SVD of B @ A from its factors (B: d_out x r, A: r x d_in), never forming B @ A."""
    qb, rb = torch.linalg.qr(B.double())
    qa, ra = torch.linalg.qr(A.double().T)
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    return SVD(qb @ u, s, qa @ vh.T)


def numerical_rank(s: torch.Tensor, shape: tuple[int, int]) -> int:
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    tol = float(s[0]) * max(shape) * torch.finfo(torch.float32).eps
    return int((s > tol).sum())


def effective_rank(s: torch.Tensor) -> float:
    total = float(s.sum())
    if total == 0.0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def subspace_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared cosine of the principal angles between the column spaces of the orthonormal
    a (d x k) and b (d x k')."""
    k = min(a.shape[1], b.shape[1])
    if k == 0:
        return math.nan
    cos = torch.linalg.svdvals(a.T.double() @ b.double())[:k].clamp(max=1.0)
    return float((cos**2).mean())


def intruders(
    w0_u: torch.Tensor, tuned_u: torch.Tensor, epsilon: float, reference_k: Optional[int] = None
) -> tuple[int, list[float]]:
    """(count, the largest |cosine| of each of W_tuned's top singular vectors `tuned_u` with W0's
    left singular vectors `w0_u`)."""
    ref = w0_u if reference_k is None else w0_u[:, :reference_k]
    best = (tuned_u.double().T @ ref.to(tuned_u.device, torch.float64)).abs().max(dim=1).values
    return int((best < epsilon).sum()), [round(float(v), 6) for v in best]


def update_stats(svd: SVD, w0: torch.Tensor, w0_svd: SVD, top_k: int) -> dict:
    """The spectrum figures of one update (docstring above), JSON-ready."""
    s = svd.S
    shape = (svd.U.shape[0], svd.V.shape[0])
    energy = float((s**2).sum())
    k = min(top_k, s.numel())
    w0_norm = float(torch.linalg.matrix_norm(w0.double()))
    return {
        "shape": list(shape),
        "top_singular_values": [float(v) for v in s[:k]],
        "top_k_energy": float((s[:k] ** 2).sum()) / energy if energy else math.nan,
        "stable_rank": energy / float(s[0]) ** 2 if energy else 0.0,
        "effective_rank": effective_rank(s),
        "numerical_rank": numerical_rank(s, shape),
        "relative_norm": math.sqrt(energy) / w0_norm if w0_norm else math.nan,
        "overlap_left": subspace_overlap(svd.U[:, :k], w0_svd.U[:, :k]),
        "overlap_right": subspace_overlap(svd.V[:, :k], w0_svd.V[:, :k]),
    }
