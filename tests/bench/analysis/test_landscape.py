"""The landscape on a quadratic whose curvature is known: surface, line, path and sharpness."""

from __future__ import annotations

import math

import pytest
import torch

from bench.analysis import landscape as L

H = {"w": torch.tensor([[1.0, 2.0], [3.0, 0.5], [1.5, 4.0]]), "b": torch.tensor([2.0, 1.0, 0.25, 3.0])}
C = {"w": torch.tensor([[0.1, -0.2], [0.3, 0.0], [-0.5, 0.2]]), "b": torch.tensor([1.0, -1.0, 0.5, 0.0])}


def analytic(state: dict) -> float:
    """L(w) = 1/2 sum_i h_i (w_i - c_i)^2, in float64."""
    return 0.5 * math.fsum(float((H[k].double() * (state[k].double() - C[k].double()) ** 2).sum()) for k in H)


def params_at(state: dict) -> dict:
    return {k: torch.nn.Parameter(v.clone().float()) for k, v in state.items()}


def unit_pair():
    """Two orthonormal directions in the (w, b) space."""
    g = torch.Generator().manual_seed(3)
    flat = torch.randn(10, 2, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(flat)
    split = lambda v: {"w": v[:6].reshape(3, 2), "b": v[6:]}  # noqa: E731
    return split(q[:, 0]), split(q[:, 1])


def test_the_path_projects_onto_its_plane_with_its_known_offsets():
    final = {k: v + 0.3 for k, v in C.items()}
    u1, u2 = unit_pair()
    offsets = [(1.0, 0.0), (0.6, 0.5), (0.2, 0.4), (0.0, 0.0)]
    path = [L.combine((1.0, final), (a, u1), (b, u2)) for a, b in offsets]
    d1, d2, coords, share = L.trajectory_plane(path, final)
    assert share == pytest.approx(1.0)
    for (a, b), (x, y) in zip(offsets, coords.tolist()):
        assert math.hypot(x, y) == pytest.approx(math.hypot(a, b), abs=1e-9)
    for (x, y), w in zip(coords.tolist(), path):
        rebuilt = L.combine((1.0, final), (x, d1), (y, d2))
        assert all(torch.allclose(rebuilt[k], w[k].double(), atol=1e-9) for k in w)
    assert L.dot(d1, d2) == pytest.approx(0.0, abs=1e-12) and L.dot(d1, d1) == pytest.approx(1.0)


def test_the_surface_line_and_sharpness_match_the_analytic_loss_and_the_parameters_come_back():
    final = {k: v + 0.2 for k, v in C.items()}
    params = params_at(final)
    u1, u2 = unit_pair()
    path = [L.combine((1.0, final), (a, u1), (b, u2)) for a, b in ((1.0, 0.2), (0.5, 0.4), (0.0, 0.0))]
    start = {k: v.float() for k, v in path[0].items()}

    def loss():
        return analytic({k: p.detach() for k, p in params.items()})

    out = L.measure(params, loss, path, start, grid=5, line_points=5, radius=0.1, samples=4, seed=0)
    d1, d2, _, _ = L.trajectory_plane(path, L.cpu_copy(params))
    t = out["trajectory"]
    for j, y in enumerate(t["y"]):
        for i, x in enumerate(t["x"]):
            assert t["loss"][j][i] == pytest.approx(analytic(L.combine((1.0, final), (x, d1), (y, d2))), rel=1e-5)
    step = L.combine((1.0, final), (-1.0, start))
    for a, value in zip(out["line"]["alpha"], out["line"]["loss"]):
        assert value == pytest.approx(analytic(L.combine((1.0, start), (a, step))), rel=1e-5)
    assert out["line"]["alpha"][0] == -0.5 and out["line"]["alpha"][-1] == 1.5
    assert out["loss_at_final"] == pytest.approx(analytic(final), rel=1e-6)
    assert out["points"] == 1 + 25 + 5 + 25 + 4  # every point one evaluation
    assert all(torch.equal(params[k].detach(), final[k].float()) for k in final)  # put back exactly


def test_sharpness_at_a_minimum_grows_with_the_square_of_the_radius():
    def sharp(radius):
        params = params_at(C)
        out = L.measure(
            params,
            lambda: analytic({k: p.detach() for k, p in params.items()}),
            [C, C],
            C,
            grid=2,
            line_points=2,
            radius=radius,
            samples=6,
            seed=1,
        )
        return out["sharpness"]["mean_increase"]

    small, large = sharp(0.05), sharp(0.1)
    assert small > 0 and large / small == pytest.approx(4.0, rel=1e-4)


def test_filter_normalised_directions_have_the_row_norms_of_the_weights():
    g = torch.Generator().manual_seed(0)
    d = L.filter_normalised({"w": C["w"], "b": C["b"]}, g)
    assert torch.allclose(d["w"].norm(dim=1), C["w"].double().norm(dim=1))
    assert float(d["b"].norm()) == pytest.approx(float(C["b"].norm()))
