"""The training loop, independent of the web app, the queue and the database.

A training is resumable exactly: at an epoch boundary its whole state is the network's and the
optimizer's state dicts, the number of epochs done, and the states of its two private random
generators (data order and dropout masks). Nothing else is random: the data set is regenerated from
its own seed and the initial weights from the session seed. A run restored from a checkpoint taken
after epoch k therefore computes epochs k+1.. exactly as the uninterrupted run does (same device,
same torch build and thread count), down to the last bit of the final weights.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from app.ml.datasets import Dataset
from app.ml.network import SeededDropout

CHECKPOINT_FORMAT = 1


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


class CheckpointError(ValueError):
    """A checkpoint that does not fit this training (format, network shape, optimizer)."""


def make_optimizer(name: str, params: list[nn.Parameter], learning_rate: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate)
    # Momentum makes plain SGD converge in a playground-friendly number of epochs.
    return torch.optim.SGD(params, lr=learning_rate, momentum=0.9)


class TrainState:
    """Network, optimizer, epochs done and the random generators of one training, on `device`."""

    def __init__(self, net: nn.Module, params: TrainingParams, device: torch.device) -> None:
        self.net = net.to(device)
        self.params = params
        self.device = device
        self.epoch = 0
        self.optimizer = make_optimizer(params.optimizer, list(self.net.parameters()), params.learning_rate)
        # Separate streams derived from the session seed; the weights' generator (build_network) is a third.
        self.shuffle = torch.Generator().manual_seed(params.seed)
        self.dropout = torch.Generator().manual_seed(params.seed + 1)
        for module in self.net.modules():
            if isinstance(module, SeededDropout):
                module.generator = self.dropout

    def checkpoint(self) -> bytes:
        """Everything needed to continue after `self.epoch`, as bytes (torch.save, tensors only)."""
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "shuffle_rng": self.shuffle.get_state(),
            "dropout_rng": self.dropout.get_state(),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    def restore(self, data: bytes) -> None:
        # weights_only: the bytes come from the database, never unpickle arbitrary objects from it.
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("unknown checkpoint format")
        try:
            self.net.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])  # moves its tensors to the parameters' device
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not fit this training: {exc}") from None
        self.shuffle.set_state(state["shuffle_rng"])
        self.dropout.set_state(state["dropout_rng"])
        self.epoch = int(state["epoch"])


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


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
    state: TrainState,
    data: Dataset,
    on_epoch: Callable[[EpochResult], bool],
    should_stop: Callable[[], bool],
) -> int:
    """Run epochs `state.epoch + 1 .. params.epochs`; return the number of epochs done in all.

    `on_epoch` is called after every epoch, with `state` consistent (state.epoch is that epoch, so a
    checkpoint may be taken there), and returns False to stop; `should_stop` is polled between
    batches so a stop does not wait for a long epoch (the state is then mid-epoch: not for a checkpoint).
    """
    net, params, device = state.net, state.params, state.device
    net.train()
    x, y = data.x.to(device), data.y.to(device)
    loss_fn: nn.Module = nn.CrossEntropyLoss() if data.spec.task == "classification" else nn.MSELoss()
    n = x.shape[0]
    while state.epoch < params.epochs:
        epoch = state.epoch + 1
        order = torch.randperm(n, generator=state.shuffle).to(device)
        for start in range(0, n, params.batch_size):
            if should_stop():
                return state.epoch
            batch = order[start : start + params.batch_size]
            state.optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x[batch]), y[batch]).backward()
            state.optimizer.step()
        state.epoch = epoch
        loss, accuracy = evaluate(net, x, y, loss_fn)
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"loss became {loss} at epoch {epoch}; lower the learning rate (was {params.learning_rate})"
            )
        if not on_epoch(EpochResult(epoch, loss, accuracy)):
            return state.epoch
    return state.epoch
