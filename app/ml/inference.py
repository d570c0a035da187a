"""Forward passes for predictions and decision-boundary grids (always on CPU: batches are tiny)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LoadedModel:
    net: nn.Module  # in eval mode, on CPU
    task: str
    input_dim: int
    output_dim: int
    version: int  # id of the session that produced the weights


@dataclass(frozen=True)
class Prediction:
    outputs: list[float] | list[int]  # regression values, or predicted class ids
    probabilities: list[list[float]] | None  # per class, classification only


class NonFiniteOutputError(ValueError):
    """Inputs pushed the network outside float32 range."""


def predict(model: LoadedModel, inputs: torch.Tensor) -> Prediction:
    with torch.inference_mode():
        out = model.net(inputs)
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteOutputError("the inputs drive the network outside its numeric range")
        if model.task == "classification":
            probabilities = torch.softmax(out, dim=1)
            return Prediction(out.argmax(dim=1).tolist(), probabilities.tolist())
        return Prediction(out[:, 0].tolist(), None)


def grid_axis(low: float, high: float, resolution: int) -> list[float]:
    return torch.linspace(low, high, resolution).tolist()


def boundary(
    model: LoadedModel, xs: list[float], ys: list[float]
) -> tuple[list[list[float]], list[list[float]] | None]:
    """Predictions over the grid, row-major (values[iy][ix]).

    Classification gives the predicted class and its probability per cell; regression the value.
    """
    gx, gy = torch.meshgrid(torch.tensor(xs), torch.tensor(ys), indexing="xy")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    shape = (len(ys), len(xs))
    with torch.inference_mode():
        out = model.net(points)
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteOutputError("the trained weights give non-finite outputs; retrain the model")
        if model.task == "classification":
            confidence, classes = torch.softmax(out, dim=1).max(dim=1)
            return classes.reshape(shape).tolist(), confidence.reshape(shape).tolist()
        return out[:, 0].reshape(shape).tolist(), None
