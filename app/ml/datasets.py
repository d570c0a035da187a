"""Built-in synthetic 2-D datasets, generated deterministically from a seed (no downloads).

Every set spans roughly [-1, 1] in both inputs before noise, so one plotting window (BOUNDS) fits all.
`noise` is the standard deviation of Gaussian noise added to the inputs (classification) or the
target (regression), in those same units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

BOUNDS = (-1.5, 1.5)
INPUT_DIM = 2
MIN_SAMPLES = 10
MAX_NOISE = 0.5

Generator = Callable[[int, float, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str  # "classification" or "regression"
    num_classes: int  # 0 for regression
    description: str
    generate: Generator

    @property
    def output_dim(self) -> int:
        return self.num_classes if self.task == "classification" else 1


@dataclass(frozen=True)
class Dataset:
    x: torch.Tensor  # (n, 2) float32
    y: torch.Tensor  # (n,) int64 class ids, or (n, 1) float32 targets
    spec: DatasetSpec


def _uniform(n: int, g: torch.Generator, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def _balanced_labels(n: int, classes: int) -> torch.Tensor:
    return torch.arange(n) % classes


def _jitter(x: torch.Tensor, noise: float, g: torch.Generator) -> torch.Tensor:
    return x + torch.randn(x.shape, generator=g) * noise if noise > 0 else x


def _xor(n: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = _balanced_labels(n, 2)
    # Magnitudes start at 0.05: a small gap around the axes keeps the noiseless set separable.
    magnitude = torch.rand((n, 2), generator=g) * 0.95 + 0.05
    sign_x = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    sign_y = torch.where(y == 1, sign_x, -sign_x)  # class 1: same-sign quadrants
    x = magnitude * torch.stack([sign_x, sign_y], dim=1)
    return _jitter(x, noise, g), y


def _circles(n: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = _balanced_labels(n, 2)
    radius = torch.where(y == 1, 0.4, 1.0)
    angle = _uniform(n, g, 0.0, 2 * math.pi)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return _jitter(x, noise, g), y


def _moons(n: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = _balanced_labels(n, 2)
    t = _uniform(n, g, 0.0, math.pi)
    upper = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
    x = torch.where((y == 1).unsqueeze(1), lower, upper)
    x = (x - torch.tensor([0.5, 0.25])) / 1.5  # centre on the origin, scale into [-1, 1]
    return _jitter(x, noise, g), y


def _spirals(n: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = _balanced_labels(n, 2)
    t = torch.sqrt(_uniform(n, g, 0.0025, 1.0))  # sqrt keeps the density even along the arm
    angle = 3 * math.pi * t + math.pi * y
    x = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], dim=1)
    return _jitter(x, noise, g), y


def _blobs(n: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = _balanced_labels(n, 3)
    angles = torch.tensor([90.0, 210.0, 330.0]) * math.pi / 180
    centres = 0.6 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    x = centres[y] + torch.randn((n, 2), generator=g) * (0.12 + noise)
    return x, y


def _sine(n: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([_uniform(n, g), _uniform(n, g)], dim=1)
    target = torch.sin(math.pi * x[:, 0]) * torch.cos(0.5 * math.pi * x[:, 1])
    return x, _jitter(target, noise, g).unsqueeze(1)


def _plane(n: int, noise: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([_uniform(n, g), _uniform(n, g)], dim=1)
    target = 0.6 * x[:, 0] - 0.4 * x[:, 1]
    return x, _jitter(target, noise, g).unsqueeze(1)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("xor", "classification", 2, "Two classes in alternating quadrants.", _xor),
        DatasetSpec("circles", "classification", 2, "A small ring inside a large ring.", _circles),
        DatasetSpec("moons", "classification", 2, "Two interleaving half circles.", _moons),
        DatasetSpec("spirals", "classification", 2, "Two intertwined spiral arms.", _spirals),
        DatasetSpec("blobs", "classification", 3, "Three Gaussian clusters.", _blobs),
        DatasetSpec("sine", "regression", 0, "Target sin(pi*x1)*cos(pi*x2/2).", _sine),
        DatasetSpec("plane", "regression", 0, "Target 0.6*x1 - 0.4*x2 (a tilted plane).", _plane),
    )
}


def generate(name: str, n_samples: int, noise: float, seed: int) -> Dataset:
    """Build a dataset; the same arguments always give the same tensors."""
    spec = DATASETS[name]
    g = torch.Generator().manual_seed(seed)
    x, y = spec.generate(n_samples, noise, g)
    # Shuffle so that class order does not leak into anything that slices the set.
    order = torch.randperm(n_samples, generator=g)
    return Dataset(x=x[order].float().contiguous(), y=y[order].contiguous(), spec=spec)
