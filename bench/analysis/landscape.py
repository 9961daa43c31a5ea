"""The loss landscape around the tuned trainable parameters (`analysis.landscape`, in `full`).

Notation: w* the trainable parameters at the end, w_0 at the start of training, w_t the snapshots
kept along the run (every max_steps / landscape_snapshots steps, w_0 included), L the held-out loss
(the task's training loss on `landscape_examples` unseen examples, bench/analysis/gap.py).

- trajectory plane: the offsets D = [w_t - w*] (T x P) and their top-2 right singular vectors d1, d2,
  found through the T x T Gram matrix D D^T (P is millions, T a few dozen); L(w* + a d1 + b d2) on a
  `landscape_grid` x `landscape_grid` grid spanning the path's projection with a margin, and the path
  itself, (<w_t - w*, d1>, <w_t - w*, d2>), with the share of the offsets' energy the plane holds;
- the line: L(w_0 + alpha (w* - w_0)) for alpha in [-0.5, 1.5] (`landscape_line_points` points);
- filter-normalised random directions (Li et al. 2018, "Visualizing the Loss Landscape of Neural
  Nets"): Gaussian directions whose every row (a filter; a vector parameter as a whole) is rescaled to
  the norm of the same row of w*, and the same grid in units of that scale over [-1, 1];
- sharpness: the mean increase of L under `sharpness_samples` filter-normalised random
  perturbations of radius `sharpness_radius`.

Every point costs one evaluation of L (a forward pass over the examples); the stage records the
time per point. The parameters are put back exactly afterwards. Methods whose trainable tensors
change name or shape during training (rank pruning and reallocation, phase chains) have no single
parameter space for a path: not applicable, said so.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from bench.train import Observer

LINE = (-0.5, 1.5)
MARGIN = 0.25  # the trajectory grid extends the path's extent by this share on each side


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def cpu_copy(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 copies on the CPU: (snapshots + 1) x 4 bytes per trainable parameter in all."""
    return {n: p.detach().to("cpu", torch.float32, copy=True) for n, p in params.items()}


class Snapshots(Observer):
    """A train-loop observer keeping the trainable parameters every `every` steps (on the CPU)."""

    def __init__(self, every: int):
        self.every = max(1, every)
        self.kept: list[tuple[int, dict]] = []

    def start(self, step: int, model) -> None:
        self.kept = [(step, cpu_copy(trainable(model)))]

    def after_step(self, step: int, model) -> None:
        if step % self.every == 0:
            self.kept.append((step, cpu_copy(trainable(model))))


def same_space(states: Sequence[dict]) -> bool:
    first = states[0]
    return all(s.keys() == first.keys() and all(s[k].shape == first[k].shape for k in first) for s in states)


# Parameter-space vectors are dicts of tensors (name -> float64 tensor): never one flat vector,
# which for full fine-tuning would be the size of the model, per snapshot.
def dot(a: dict, b: dict) -> float:
    return math.fsum(float((a[k].double() * b[k].double()).sum()) for k in a)


def combine(*terms: tuple[float, dict]) -> dict:
    keys = terms[0][1].keys()
    return {k: sum(c * t[k].double() for c, t in terms) for k in keys}


def trajectory_plane(path: Sequence[dict], final: dict) -> tuple[dict, dict, torch.Tensor, float]:
    """(d1, d2: unit directions, the path's coordinates T x 2, the energy share of the plane)."""
    offsets = [combine((1.0, s), (-1.0, final)) for s in path]
    gram = torch.tensor([[dot(a, b) for b in offsets] for a in offsets], dtype=torch.float64)
    values, vectors = torch.linalg.eigh(gram)  # ascending
    order = values.argsort(descending=True)
    values, vectors = values[order].clamp(min=0), vectors[:, order]
    dirs = []
    for i in range(2):
        d = combine(*((float(vectors[t, i]), o) for t, o in enumerate(offsets)))
        norm = math.sqrt(dot(d, d))
        dirs.append({k: v / norm if norm > 0 else v * 0 for k, v in d.items()})
    coords = torch.tensor([[dot(o, dirs[0]), dot(o, dirs[1])] for o in offsets], dtype=torch.float64)
    total = float(values.sum())
    return dirs[0], dirs[1], coords, (float(values[:2].sum()) / total if total else math.nan)


def filter_normalised(final: dict, generator: torch.Generator) -> dict:
    """A Gaussian direction with each row scaled to the norm of the same row of w*."""
    out = {}
    for k, w in final.items():
        w = w.double()
        d = torch.randn(w.shape, generator=generator, dtype=torch.float64)
        if w.dim() <= 1:
            out[k] = d * (w.norm() / d.norm().clamp(min=1e-30))
        else:
            rows_w, rows_d = w.reshape(w.shape[0], -1), d.reshape(d.shape[0], -1)
            scale = rows_w.norm(dim=1, keepdim=True) / rows_d.norm(dim=1, keepdim=True).clamp(min=1e-30)
            out[k] = (rows_d * scale).reshape(w.shape)
    return out


class Probe:
    """Sets the live trainable parameters to w* + offset and evaluates L there; restores w* on close."""

    def __init__(self, params: dict[str, torch.Tensor], loss: Callable[[], float]):
        self.params, self.loss = params, loss
        self.final = {k: p.detach().clone() for k, p in params.items()}  # exact, in the parameters' dtype
        self.points = 0

    @torch.no_grad()
    def at(self, offset: dict) -> float:
        for k, p in self.params.items():
            p.copy_((self.final[k].double() + offset[k].to(p.device)).to(p.dtype))
        self.points += 1
        return float(self.loss())

    @torch.no_grad()
    def restore(self) -> None:
        for k, p in self.params.items():
            p.copy_(self.final[k])


def grid_values(probe: Probe, d1: dict, d2: dict, xs, ys) -> list[list[float]]:
    return [[probe.at(combine((a, d1), (b, d2))) for a in xs] for b in ys]


def axis(low: float, high: float, n: int) -> list[float]:
    return [low + (high - low) * i / (n - 1) for i in range(n)] if n > 1 else [0.0]


def measure(
    params, loss, path: Sequence[dict], start: dict, grid: int, line_points: int, radius: float, samples: int, seed: int
) -> dict:
    """Every landscape figure of the docstring above; `path` the snapshots (w_0 first), `start` w_0."""
    probe = Probe(params, loss)
    try:
        final = cpu_copy(probe.final)
        zero = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in final.items()}
        centre = probe.at(zero)
        d1, d2, coords, share = trajectory_plane(path, final)
        lo, hi = coords.min(dim=0).values, coords.max(dim=0).values
        pad = (hi - lo).clamp(min=1e-12) * MARGIN
        xs = axis(float(lo[0] - pad[0]), float(hi[0] + pad[0]), grid)
        ys = axis(float(lo[1] - pad[1]), float(hi[1] + pad[1]), grid)
        surface = grid_values(probe, d1, d2, xs, ys)
        step = combine((1.0, final), (-1.0, start))
        alphas = axis(*LINE, line_points)
        line = [probe.at(combine((a - 1.0, step))) for a in alphas]  # w_0 + a (w* - w_0) = w* + (a - 1) step
        g = torch.Generator().manual_seed(seed)
        r1, r2 = filter_normalised(final, g), filter_normalised(final, g)
        unit = axis(-1.0, 1.0, grid)
        random_surface = grid_values(probe, r1, r2, unit, unit)
        bumps = [probe.at(combine((radius, filter_normalised(final, g)))) - centre for _ in range(samples)]
    finally:
        probe.restore()
    return {
        "loss_at_final": centre,
        "trajectory": {
            "x": xs,
            "y": ys,
            "loss": surface,
            "path": [[float(a), float(b)] for a, b in coords],
            "plane_energy_share": share,
        },
        "line": {"alpha": alphas, "loss": line},
        "random": {"x": unit, "y": unit, "loss": random_surface, "normalisation": "filter (Li et al. 2018)"},
        "sharpness": {
            "radius": radius,
            "samples": samples,
            "mean_increase": sum(bumps) / len(bumps) if bumps else None,
        },
        "points": probe.points,
    }
