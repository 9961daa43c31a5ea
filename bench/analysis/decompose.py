"""Singular vectors of W0 and of W_tuned for the subspace overlaps and the intruder dimensions.

A dense SVD costs about 15 s for a 4096 x 4096 float64 matrix on the 2-core machine, and a 7B
model with adapters on every linear layer has 224 such matrices, each needing W0's and W_tuned's.
Two cheaper routes, each checked on the matrix it decomposes, with the dense SVD as the fallback
when the check fails (docs/analysis.md, "How W0 and W_tuned are decomposed"):

- W0 (all of its left singular vectors, which the intruder test compares with): the eigenvectors
  of the smaller Gram matrix, W0 W0^T = U S^2 U^T (or W0^T W0 = V S^2 V^T, then U = W0 V / S), in
  float64. Check, on CHECKED columns among the singular values above s_1 * RANK_FLOOR: the
  relative residual ||W0 W0^T u_j - s_j^2 u_j|| / (s_j s_1) and the orthonormality of U.
- W_tuned (only its top k left singular vectors): block Krylov iteration (Musco & Musco 2015) with
  a Rayleigh-Ritz step. Where W_tuned = W0 + B A (the method's factors) and W0's basis is known, the
  iteration runs on W_tuned W_tuned^T written in the coordinates of [U0, Q], Q an orthonormal basis
  of B's part outside U0's span: there it is diag(S0^2, 0) plus a term of rank at most 2r
  (`low_rank_update_top`), so a product costs O(d r) instead of O(d_out d_in). Check, on W_tuned
  itself: the residual ||W v_i - s_i u_i|| / s_1 of each returned triplet, v_i = W^T u_i / s_i.

Both run on the device the matrix is on, so a GPU run decomposes on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.analysis.spectra import dense_svd

# A decomposition whose check exceeds this is replaced by the dense SVD (float64 arithmetic).
TOLERANCE = 1e-6
# singular values below s_1 times this are under the float32 rounding of W0 itself (eps = 6e-8):
# their vectors are set by that rounding, so the basis completes them with any orthonormal ones
RANK_FLOOR = 1e-7
CHECKED = 16  # columns of W0's basis the Gram route's check examines (_gram_error)
KRYLOV_BLOCKS = 12  # Krylov blocks on a formed W_tuned before the dense fallback
KRYLOV_OVERSAMPLE = 8  # columns per block beyond k
RITZ_AT = (2, 4, 7)  # blocks after which the Ritz vectors are checked (and after the last)
# W_tuned = W0 + B A in W0's basis: a matrix-vector product costs O(d r), so many more blocks
IMPLICIT_BLOCKS = 64
IMPLICIT_OVERSAMPLE = 16
IMPLICIT_RITZ_AT = (4, 8, 16, 32, 48)


@dataclass
class Basis:
    """W ~ U diag(S) V^T: U (d_out x m) and S (m) in full or for the top k, V for the top k only."""

    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor
    route: str  # gram | krylov (on the formed matrix) | krylov-w0 (in W0's coordinates) | dense
    error: float  # the route's own check (0.0 for the dense SVD)


def dense(w: torch.Tensor, k: int | None = None) -> Basis:
    """The dense SVD (spectra.dense_svd): all of it, or its top k."""
    d = dense_svd(w)
    keep = d.S.numel() if k is None else min(k, d.S.numel())
    return Basis(d.U if k is None else d.U[:, :keep], d.S[:keep], d.V[:, :keep], "dense", 0.0)


def w0_basis(w0: torch.Tensor, top_k: int) -> Basis:
    """All left singular vectors and values of W0, and its top-k right ones."""
    basis = gram(w0, top_k)
    if basis.error <= TOLERANCE:
        return basis
    d = dense(w0)
    return Basis(d.U, d.S, right_vectors(w0, d.U, d.S, top_k), "dense", 0.0)


def right_vectors(w: torch.Tensor, U: torch.Tensor, S: torch.Tensor, top_k: int) -> torch.Tensor:
    """W's top-k right singular vectors from its left ones, v_j = W^T u_j / s_j; those of the
    singular values under RANK_FLOOR (a W0 of rank below k) completed orthonormally."""
    k = min(top_k, S.numel())
    live = int((S[:k] > S[0] * RANK_FLOOR).sum()) if S.numel() else 0
    V = (w.double().T @ U[:, :live]) / S[:live]
    return torch.cat([V, _complete(V, k - live)], dim=1) if live < k else V


def gram(w: torch.Tensor, top_k: int) -> Basis:
    w = w.double()
    d_out, d_in = w.shape
    if d_out <= d_in:
        lam, U = _eigh_descending(w @ w.T)
        S = lam.clamp(min=0).sqrt()
        live = int((S > S[0] * RANK_FLOOR).sum())
    else:
        lam, V_all = _eigh_descending(w.T @ w)
        S = lam.clamp(min=0).sqrt()
        live = int((S > S[0] * RANK_FLOOR).sum())
        U = torch.empty(d_out, S.numel(), dtype=w.dtype, device=w.device)
        U[:, :live] = (w @ V_all[:, :live]) / S[:live]
        U[:, live:] = _complete(U[:, :live], S.numel() - live)
    error = max(_gram_error(w, U, S, live), _gram_bound(lam, live))
    return Basis(U, S, right_vectors(w, U, S, top_k), "gram", error)


def _gram_error(w: torch.Tensor, U: torch.Tensor, S: torch.Tensor, live: int) -> float:
    """A posteriori, on CHECKED columns: the largest, the smallest live ones and an even spread
    between; a full check would cost as much as the decomposition. For a tall W0 (U = W0 V / S)
    it sees the loss of orthogonality, like eps (s_1 / s_j)^2."""
    if live == 0:
        return 0.0
    spread = torch.linspace(0, live - 1, CHECKED // 2).round().long()
    idx = torch.unique(torch.cat([spread, torch.arange(max(0, live - CHECKED // 2), live)])).to(U.device)
    u, s = U[:, idx], S[idx]
    residual = torch.linalg.vector_norm(w @ (w.T @ u) - u * s**2, dim=0) / (s * S[0])
    eye = torch.eye(U.shape[1], dtype=U.dtype, device=U.device)[:, idx]
    return max(float(residual.max()), float((U.T @ u - eye).abs().max()))


def _gram_bound(lam: torch.Tensor, live: int) -> float:
    """A priori, from the spectrum alone: eigh's vectors of the Gram matrix are off by an angle of
    about eps lambda_1 / gap_lambda, the dense SVD's by eps s_1 / gap_s. A residual cannot see that
    forward error, so the route is refused (the value returned exceeds TOLERANCE) wherever it
    would be wrong by more than TOLERANCE and by more than the dense SVD itself."""
    if live < 2:
        return 0.0
    eps = torch.finfo(torch.float64).eps
    lam = lam[:live].clamp(min=0)
    s = lam.sqrt()
    inf = torch.tensor([float("inf")], dtype=lam.dtype, device=lam.device)
    gap_lam = torch.minimum(torch.cat([inf, lam[:-1] - lam[1:]]), torch.cat([lam[:-1] - lam[1:], inf]))
    gap_s = torch.minimum(torch.cat([inf, s[:-1] - s[1:]]), torch.cat([s[:-1] - s[1:], inf]))
    tiny = torch.finfo(torch.float64).tiny
    angle_gram = eps * lam[0] / gap_lam.clamp(min=tiny)
    angle_dense = eps * s[0] / gap_s.clamp(min=tiny)
    allowed = angle_dense.clamp(min=TOLERANCE)
    return float((angle_gram / allowed).max()) * TOLERANCE


def _eigh_descending(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lam, vec = torch.linalg.eigh(g)
    return lam.flip(0), vec.flip(1)


def _complete(u: torch.Tensor, n: int) -> torch.Tensor:
    """n orthonormal columns orthogonal to the orthonormal columns of u."""
    if n == 0:
        return u[:, :0]
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(u.shape[0], n, generator=g, dtype=u.dtype).to(u.device)
    for _ in range(2):  # twice is enough for orthogonality to working precision
        x = x - u @ (u.T @ x)
    return torch.linalg.qr(x)[0]


def top_left(w: torch.Tensor, k: int) -> Basis:
    """The top-k singular triplets of w by block Krylov iteration on w w^T; the dense SVD when they
    do not meet TOLERANCE within KRYLOV_BLOCKS blocks."""
    w = w.double()
    k = min(k, *w.shape)
    found = _symmetric_top(lambda M: w @ (w.T @ M), w.shape[0], k, w.device, KRYLOV_BLOCKS, KRYLOV_OVERSAMPLE, RITZ_AT)
    basis = _checked(found, lambda U: w.T @ U, lambda V: w @ V, "krylov")
    return basis if basis is not None else dense(w, k)


def _checked(found, times_t, times, route: str) -> Basis | None:
    """The triplets of Ritz pairs (lambda, u) of W W^T, with v = W^T u / s, if every residual
    ||W v - s u|| / s_1 on W itself is within TOLERANCE; `times_t` and `times` apply W^T and W."""
    if found is None:
        return None
    lam, U = found
    S = lam.clamp(min=0).sqrt()
    V = times_t(U) / S.clamp(min=torch.finfo(torch.float64).tiny)
    residual = torch.linalg.vector_norm(times(V) - U * S, dim=0)
    error = float(residual.max() / S[0]) if float(S[0]) > 0 else 0.0
    return Basis(U, S, V, route, error) if error <= TOLERANCE else None


def low_rank_update_top(w0: torch.Tensor, basis: Basis, B: torch.Tensor, A: torch.Tensor, k: int) -> Basis:
    """The top-k singular triplets of W0 + B A from W0's basis (all of its left vectors) and the
    factors (module docstring); top_left on the formed matrix when the check fails."""
    w0, B, A = w0.double(), B.to(w0.device, torch.float64), A.to(w0.device, torch.float64)
    U0 = basis.U.to(w0.device, torch.float64)
    Y1 = U0.T @ B
    outside = B - U0 @ Y1
    # B's directions outside U0's span: no more than the d_out - m that exist, and only those
    # carrying more than rounding
    q, sv, _ = torch.linalg.svd(outside, full_matrices=False)
    carried = int((sv > 1e-12 * float(torch.linalg.matrix_norm(B))).sum())
    Q = q[:, : min(carried, U0.shape[0] - U0.shape[1])]
    if Q.shape[1]:
        Q = torch.linalg.qr(Q - U0 @ (U0.T @ Q))[0]  # once more: orthogonal to U0 to working precision
    m, extra, r = U0.shape[1], Q.shape[1], B.shape[1]
    Y = torch.cat([Y1, Q.T @ B])  # B in the coordinates of [U0, Q]
    X = torch.cat([U0.T @ (w0 @ A.T), torch.zeros(extra, r, dtype=w0.dtype, device=w0.device)])
    D = torch.cat([basis.S.to(w0.device, torch.float64) ** 2, torch.zeros(extra, dtype=w0.dtype, device=w0.device)])
    Z = A @ A.T

    def gram_times(M: torch.Tensor) -> torch.Tensor:
        YtM = Y.T @ M
        return D[:, None] * M + X @ YtM + Y @ (X.T @ M) + Y @ (Z @ YtM)

    k = min(k, m + extra)
    found = _symmetric_top(gram_times, m + extra, k, w0.device, IMPLICIT_BLOCKS, IMPLICIT_OVERSAMPLE, IMPLICIT_RITZ_AT)
    if found is not None:  # from the coordinates of [U0, Q] back to R^d_out
        found = found[0], U0 @ found[1][:m] + Q @ found[1][m:]
    basis = _checked(found, lambda U: w0.T @ U + A.T @ (B.T @ U), lambda V: w0 @ V + B @ (A @ V), "krylov-w0")
    return basis if basis is not None else top_left(w0 + B @ A, k)


def _symmetric_top(times, n: int, k: int, device, blocks: int, oversample: int, ritz_at: tuple):
    """(top-k eigenvalues, eigenvectors) of the positive semi-definite operator `times` by block
    Krylov iteration with blocks of k + oversample columns and a Rayleigh-Ritz step after the
    blocks in `ritz_at` and the last, or None when the Ritz pairs miss TOLERANCE."""
    width = min(k + oversample, n)
    g = torch.Generator(device="cpu").manual_seed(0)
    block = torch.linalg.qr(times(torch.randn(n, width, generator=g, dtype=torch.float64).to(device)))[0]
    basis = [block]
    for step in range(1, blocks + 1):
        block = torch.linalg.qr(times(block))[0]
        basis.append(block)
        full = sum(b.shape[1] for b in basis) >= n
        if step not in ritz_at and step != blocks and not full:
            continue
        Qk = torch.linalg.qr(torch.cat(basis, dim=1))[0][:, :n]
        lam, vec = _eigh_descending(Qk.T @ times(Qk))
        lam, y = lam[:k], Qk @ vec[:, :k]
        # in singular-value terms: ||W v - s u|| / s_1 = ||G y - lam y|| / (s s_1)
        top = float(lam[0])
        if top <= 0:
            return lam, y
        residual = torch.linalg.vector_norm(times(y) - y * lam, dim=0) / (lam.clamp(min=top * 1e-12).sqrt() * top**0.5)
        if float(residual.max()) <= TOLERANCE / 10:
            return lam, y
        if full:
            break
    return None
