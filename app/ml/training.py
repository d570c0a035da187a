"""The training loop, independent of the web app and the database."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from app.ml.datasets import Dataset


@dataclass(frozen=True)
class TrainingParams:
    epochs: int
    learning_rate: float
    batch_size: int
    optimizer: str  # "sgd" or "adam"
    seed: int


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    loss: float
    accuracy: float | None  # None for regression


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite, usually because the learning rate is too high."""


def make_optimizer(name: str, params: list[nn.Parameter], learning_rate: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate)
    # Momentum makes plain SGD converge in a playground-friendly number of epochs.
    return torch.optim.SGD(params, lr=learning_rate, momentum=0.9)


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> tuple[float, float | None]:
    """Loss and accuracy on the whole set in eval mode (dropout off)."""
    net.eval()
    with torch.inference_mode():
        out = net(x)
        loss = float(loss_fn(out, y))
        accuracy = float((out.argmax(dim=1) == y).float().mean()) if y.dtype == torch.int64 else None
    net.train()
    return loss, accuracy


def train(
    net: nn.Module,
    data: Dataset,
    params: TrainingParams,
    device: torch.device,
    on_epoch: Callable[[EpochResult], bool],
    should_stop: Callable[[], bool],
) -> int:
    """Run up to `params.epochs` epochs; return how many finished.

    `on_epoch` is called after every epoch and returns False to stop; `should_stop` is polled between
    batches so a stop or shutdown does not wait for a long epoch.
    """
    net.to(device).train()
    x, y = data.x.to(device), data.y.to(device)
    loss_fn: nn.Module = nn.CrossEntropyLoss() if data.spec.task == "classification" else nn.MSELoss()
    optimizer = make_optimizer(params.optimizer, list(net.parameters()), params.learning_rate)
    shuffle = torch.Generator().manual_seed(params.seed)
    n = x.shape[0]
    for epoch in range(1, params.epochs + 1):
        order = torch.randperm(n, generator=shuffle).to(device)
        for start in range(0, n, params.batch_size):
            if should_stop():
                return epoch - 1
            batch = order[start : start + params.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x[batch]), y[batch]).backward()
            optimizer.step()
        loss, accuracy = evaluate(net, x, y, loss_fn)
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"loss became {loss} at epoch {epoch}; lower the learning rate (was {params.learning_rate})"
            )
        if not on_epoch(EpochResult(epoch, loss, accuracy)):
            return epoch
    return params.epochs
