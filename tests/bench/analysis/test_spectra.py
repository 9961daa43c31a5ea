"""Spectrum figures against hand formulas and a dense SVD."""

from __future__ import annotations

import math

import pytest
import torch

from bench.analysis import decompose, spectra


def top_left(w, k):
    return decompose.top_left(w, k).U


def test_the_factored_svd_equals_the_dense_svd_of_the_product():
    g = torch.Generator().manual_seed(0)
    B, A = torch.randn(40, 5, generator=g).double(), torch.randn(5, 30, generator=g).double()
    thin, dense = spectra.factored_svd(B, A), spectra.dense_svd(B @ A)
    assert thin.S.shape == (5,)
    assert torch.allclose(thin.S, dense.S[:5], rtol=1e-9, atol=1e-9)
    assert float(dense.S[5:].max()) < 1e-10 * float(dense.S[0])  # the product has rank 5
    rebuilt = thin.U @ torch.diag(thin.S) @ thin.V.T
    assert torch.allclose(rebuilt, B @ A, atol=1e-10)
    w0 = torch.randn(40, 30, generator=g)
    w0_svd = spectra.dense_svd(w0)
    a, b = spectra.update_stats(thin, w0, w0_svd, 3), spectra.update_stats(dense, w0, w0_svd, 3)
    for key in ("top_k_energy", "stable_rank", "effective_rank", "relative_norm", "overlap_left", "overlap_right"):
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    assert a["numerical_rank"] == b["numerical_rank"] == 5


def test_the_figures_follow_their_formulas_on_a_diagonal_update():
    delta = torch.zeros(6, 4)
    delta[0, 0], delta[1, 1] = 4.0, 3.0  # singular values 4, 3
    w0 = torch.eye(6, 4) * 2.0  # ||W0||_F = 4
    stats = spectra.update_stats(spectra.dense_svd(delta), w0, spectra.dense_svd(w0), top_k=1)
    assert stats["top_singular_values"] == pytest.approx([4.0])
    assert stats["top_k_energy"] == pytest.approx(16 / 25)
    assert stats["stable_rank"] == pytest.approx(25 / 16)
    p = torch.tensor([4 / 7, 3 / 7])
    assert stats["effective_rank"] == pytest.approx(math.exp(float(-(p * p.log()).sum())))
    assert stats["numerical_rank"] == 2
    assert stats["relative_norm"] == pytest.approx(5 / 4)


def test_overlap_is_one_for_the_same_subspace_and_zero_for_an_orthogonal_one():
    e = torch.eye(5, dtype=torch.float64)
    assert spectra.subspace_overlap(e[:, :2], e[:, [1, 0]]) == pytest.approx(1.0)
    assert spectra.subspace_overlap(e[:, :2], e[:, 2:4]) == pytest.approx(0.0)
    assert spectra.subspace_overlap(e[:, :2], e[:, [0, 3]]) == pytest.approx(0.5)


def test_an_update_along_no_singular_direction_of_w0_is_an_intruder():
    d = 16
    w0 = torch.diag(torch.linspace(2.0, 1.0, d))  # singular vectors: the standard basis
    w0_u = spectra.dense_svd(w0).U
    spread = torch.ones(d) / math.sqrt(d)  # |cos| with every basis vector: 1/4
    intruding = w0 + 1000.0 * torch.outer(spread, spread)
    count, sims = spectra.intruders(w0_u, top_left(intruding, 1), epsilon=0.5)
    assert count == 1 and sims[0] == pytest.approx(1 / math.sqrt(d), abs=1e-3)
    aligned = w0 + 10.0 * torch.outer(torch.eye(d)[3], torch.eye(d)[3])
    count, sims = spectra.intruders(w0_u, top_left(aligned, 1), epsilon=0.5)
    assert count == 0 and sims[0] == pytest.approx(1.0)
    # epsilon is the threshold: at 0.2 the spread direction is no intruder
    assert spectra.intruders(w0_u, top_left(intruding, 1), epsilon=0.2)[0] == 0
