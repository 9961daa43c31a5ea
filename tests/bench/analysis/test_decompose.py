"""The Gram and Krylov routes against numpy's dense SVD, and their fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.analysis import decompose


def with_spectrum(d_out: int, d_in: int, s: np.ndarray, seed: int = 0) -> torch.Tensor:
    """U diag(s) V^T with random orthonormal U, V: a matrix whose singular values are known."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((d_out, len(s))))[0]
    v = np.linalg.qr(rng.standard_normal((d_in, len(s))))[0]
    return torch.from_numpy(u * s @ v.T)


def same_vectors(a: torch.Tensor, b: np.ndarray) -> float:
    """Largest distance ||a_j - sign_j b_j|| between paired columns (singular vectors have a free
    sign): about the angle between them, not its square."""
    a = a.numpy()
    sign = np.sign(np.sum(a * b, axis=0))
    return float(np.linalg.norm(a - b * sign, axis=0).max())


@pytest.mark.parametrize("shape", [(40, 60), (60, 40)])
def test_the_gram_route_gives_the_dense_svd(shape):
    s = np.linspace(3.0, 0.5, min(shape))  # distinct values: the vectors are defined up to sign
    w = with_spectrum(*shape, s)
    got = decompose.w0_basis(w, top_k=5)
    u, sv, vh = np.linalg.svd(w.numpy(), full_matrices=False)
    assert got.route == "gram" and got.error <= decompose.TOLERANCE
    assert np.allclose(got.S.numpy(), sv, atol=1e-10)
    assert same_vectors(got.U, u) < 1e-8 and same_vectors(got.V, vh[:5].T) < 1e-8
    assert got.U.shape == (shape[0], min(shape)) and got.V.shape == (shape[1], 5)


@pytest.mark.parametrize("shape", [(30, 50), (50, 30)])
def test_a_rank_deficient_w0_keeps_a_full_orthonormal_left_basis(shape):
    w = with_spectrum(*shape, np.array([4.0, 3.0, 2.0, 1.0, 0.5]))
    got = decompose.w0_basis(w, top_k=3)
    m = min(shape)
    assert got.route == "gram" and got.U.shape == (shape[0], m)
    assert torch.allclose(got.U.T @ got.U, torch.eye(m, dtype=torch.float64), atol=1e-9)
    u, sv, _ = np.linalg.svd(w.numpy(), full_matrices=False)
    assert same_vectors(got.U[:, :5], u[:, :5]) < 1e-8
    assert np.allclose(got.S.numpy()[:5], sv[:5], atol=1e-10) and float(got.S[5:].max()) < 1e-6


def test_a_tall_ill_conditioned_w0_falls_back_to_the_dense_svd():
    # U = W V / S loses orthogonality like eps * (s_1 / s_j)^2: at s_j = 1e-5 s_1 the check fails
    w = with_spectrum(50, 20, np.logspace(0, -5.5, 20))
    assert decompose.gram(w, 3).error > decompose.TOLERANCE
    got = decompose.w0_basis(w, top_k=3)
    assert got.route == "dense" and got.V.shape == (20, 3)
    assert torch.allclose(got.U.T @ got.U, torch.eye(20, dtype=torch.float64), atol=1e-12)


def test_krylov_finds_the_top_singular_triplets():
    s = np.concatenate([np.linspace(10, 5, 6), np.linspace(2, 0.1, 94)])
    w = with_spectrum(120, 150, s, seed=1)
    got = decompose.top_left(w, 6)
    u, sv, vh = np.linalg.svd(w.numpy(), full_matrices=False)
    assert got.route == "krylov" and got.error <= decompose.TOLERANCE
    assert np.allclose(got.S.numpy(), sv[:6], rtol=1e-9)
    # Davis-Kahan: a residual r s_1 leaves a vector off by at most about r s_1 / (its gap)
    gap = np.min(np.abs(np.diff(sv[:7])))
    bound = 2 * got.error * sv[0] / gap
    assert same_vectors(got.U, u[:, :6]) < bound and same_vectors(got.V, vh[:6].T) < bound


def test_krylov_that_does_not_converge_gives_way_to_the_dense_svd(monkeypatch):
    s = np.linspace(1.0, 0.9, 100)  # no gap after the top k: a few blocks cannot separate them
    w = with_spectrum(100, 100, s, seed=2)
    monkeypatch.setattr(decompose, "KRYLOV_BLOCKS", 1)
    got = decompose.top_left(w, 4)
    assert got.route == "dense"
    assert np.allclose(got.S.numpy(), np.linalg.svd(w.numpy(), compute_uv=False)[:4], atol=1e-12)


@pytest.mark.parametrize("shape", [(60, 60), (90, 40), (40, 90), (42, 40)])
def test_a_low_rank_update_in_w0_coordinates_gives_the_dense_top_vectors(shape):
    w0 = with_spectrum(*shape, np.linspace(1.0, 0.2, min(shape)), seed=3)
    g = torch.Generator().manual_seed(4)
    B, A = torch.randn(shape[0], 4, generator=g).double(), torch.randn(4, shape[1], generator=g).double()
    B *= 0.3  # an update the size of W0's top values: it moves W_tuned's top vectors off W0's
    got = decompose.low_rank_update_top(w0, decompose.w0_basis(w0, 3), B, A, 5)
    u, sv, vh = np.linalg.svd((w0 + B @ A).numpy(), full_matrices=False)
    assert got.route == "krylov-w0" and got.error <= decompose.TOLERANCE
    assert np.allclose(got.S.numpy(), sv[:5], rtol=1e-8)
    assert same_vectors(got.U, u[:, :5]) < 1e-7 and same_vectors(got.V, vh[:5].T) < 1e-7


def test_a_low_rank_update_that_does_not_converge_is_decomposed_from_the_formed_matrix(monkeypatch):
    w0 = with_spectrum(50, 50, np.linspace(1.0, 0.99, 50), seed=5)  # no gap anywhere
    B, A = torch.zeros(50, 2, dtype=torch.float64), torch.zeros(2, 50, dtype=torch.float64)
    B[0, 0] = A[0, 0] = 1e-3
    monkeypatch.setattr(decompose, "IMPLICIT_BLOCKS", 1)
    monkeypatch.setattr(decompose, "KRYLOV_BLOCKS", 1)
    got = decompose.low_rank_update_top(w0, decompose.w0_basis(w0, 3), B, A, 3)
    assert got.route == "dense"
    assert np.allclose(got.S.numpy(), np.linalg.svd((w0 + B @ A).numpy(), compute_uv=False)[:3], atol=1e-12)


def test_an_update_inside_w0s_column_space_or_none_at_all_stays_in_w0_coordinates():
    w0 = with_spectrum(70, 30, np.linspace(2.0, 0.5, 30), seed=6)
    basis = decompose.w0_basis(w0, 3)
    g = torch.Generator().manual_seed(7)
    inside = w0 @ torch.randn(30, 3, generator=g).double()  # B in range(W0): no direction outside U0
    A = torch.randn(3, 30, generator=g).double() * 0.1
    for B in (inside, torch.zeros(70, 3, dtype=torch.float64)):
        got = decompose.low_rank_update_top(w0, basis, B, A, 4)
        u, sv, _ = np.linalg.svd((w0 + B @ A).numpy(), full_matrices=False)
        assert got.route == "krylov-w0" and np.allclose(got.S.numpy(), sv[:4], rtol=1e-9)
        assert same_vectors(got.U, u[:, :4]) < 1e-7


@pytest.mark.parametrize("shape", [(30, 50), (50, 30)])
def test_right_vectors_beyond_w0s_rank_are_orthonormal(shape):
    w = with_spectrum(*shape, np.array([3.0, 2.0, 1.0]))
    got = decompose.w0_basis(w, top_k=6)
    assert got.V.shape == (shape[1], 6)
    assert torch.allclose(got.V.T @ got.V, torch.eye(6, dtype=torch.float64), atol=1e-9)
    _, _, vh = np.linalg.svd(w.numpy())
    assert same_vectors(got.V[:, :3], vh[:3].T) < 1e-8


def test_a_cluster_of_small_singular_values_is_refused_by_the_gram_route():
    # wide, so the residual and orthogonality stay at eps: only the a-priori bound sees that the
    # Gram matrix's eigenvectors for values near 1e-5 s_1, 1e-7 s_1 apart, are off by ~1e-4
    s = np.concatenate([np.linspace(1.0, 0.5, 10), 1e-5 * (1 + 0.01 * np.arange(10))[::-1]])
    w = with_spectrum(20, 50, s, seed=8)
    u = np.linalg.svd(w.numpy(), full_matrices=False)[0]
    refused = decompose.gram(w, 2)
    assert refused.error > decompose.TOLERANCE
    assert same_vectors(refused.U[:, 10:], u[:, 10:]) > 10 * decompose.TOLERANCE  # it was right to refuse
    got = decompose.w0_basis(w, top_k=2)
    assert got.route == "dense" and same_vectors(got.U, u) < 1e-9
