"""Build multi-layer perceptrons from layer definitions."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class SeededDropout(nn.Module):
    """Dropout whose masks come from `generator` when one is set (torch's global RNG otherwise).

    Training sets a private generator: its state goes into checkpoints, so a resumed run draws the
    same masks as an uninterrupted one, and concurrent trainings in other threads cannot disturb it.
    Masks are drawn on the CPU (the generator lives there) and moved to the input's device.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.generator is None:
            return nn.functional.dropout(x, self.p, training=True)
        keep = torch.rand(x.shape, generator=self.generator) >= self.p
        return x * keep.to(device=x.device, dtype=x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@dataclass(frozen=True)
class LayerSpec:
    width: int
    activation: str
    dropout: float = 0.0


def layer_specs(layers: Sequence[Mapping[str, Any]]) -> list[LayerSpec]:
    """Layer definitions as stored in the database (JSON) to LayerSpec."""
    return [LayerSpec(int(d["width"]), str(d["activation"]), float(d.get("dropout", 0.0))) for d in layers]


def build_network(
    input_dim: int, output_dim: int, layers: Sequence[LayerSpec], seed: int | None = None
) -> nn.Sequential:
    """Hidden layers as given, then a linear output (logits or regression value).

    With a seed the initial weights come from a private generator, so concurrent trainings in other
    threads (which share torch's global RNG) cannot change them.
    """
    modules: list[nn.Module] = []
    fan_in = input_dim
    for layer in layers:
        modules += [nn.Linear(fan_in, layer.width), ACTIVATIONS[layer.activation]()]
        if layer.dropout > 0:
            modules.append(SeededDropout(layer.dropout))
        fan_in = layer.width
    modules.append(nn.Linear(fan_in, output_dim))
    net = nn.Sequential(*modules)
    if seed is not None:
        _init_weights(net, torch.Generator().manual_seed(seed))
    return net


def _init_weights(net: nn.Module, g: torch.Generator) -> None:
    # Same distribution as nn.Linear.reset_parameters, drawn from `g`.
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=g)
                bound = 1 / math.sqrt(module.in_features)
                nn.init.uniform_(module.bias, -bound, bound, generator=g)


def parameter_count(input_dim: int, output_dim: int, layers: Sequence[LayerSpec]) -> int:
    total, fan_in = 0, input_dim
    for layer in layers:
        total += (fan_in + 1) * layer.width
        fan_in = layer.width
    return total + (fan_in + 1) * output_dim


def state_dict_to_bytes(net: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buffer)
    return buffer.getvalue()


def load_state_dict_bytes(net: nn.Module, data: bytes) -> None:
    # weights_only: the bytes come from the database, never unpickle arbitrary objects from it.
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
