"""A known-answer test of torch on this host: a fixed network, fixed weights, a fixed input.

Deploy gates call GET /selftest before a new release takes traffic and compare its `answer` with
KNOWN_ANSWER (documented in app/README.md; the Ansible variable app_gate_known_answer holds the same
list). It catches a broken or mismatched torch install, or a device that computes wrongly, which
/readyz (database and schema) cannot see. No random numbers anywhere: the result is the same on every
host and device, up to float32 rounding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from app.ml.network import LayerSpec, build_network

# 2 inputs -> 4 tanh units -> 3 logits -> softmax. Dyadic weights, exact in float32. The input was
# chosen so that every exact output lies within 5e-6 of its 4-decimal rounding: float32 differences
# between devices (~1e-7) cannot flip the last published decimal.
LAYERS = (LayerSpec(4, "tanh"),)
WEIGHTS: dict[str, list[list[float]] | list[float]] = {
    "0.weight": [[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [1.0, 1.0]],
    "0.bias": [0.125, -0.25, 0.375, 0.0],
    "2.weight": [[1.0, -0.5, 0.25, 0.75], [-1.25, 1.0, 0.5, -0.5], [0.5, 0.5, -1.0, 1.0]],
    "2.bias": [0.0625, -0.125, 0.0],
}
INPUT = (1.5, 1.0)
# Class probabilities for INPUT, rounded to 4 decimals: what GET /selftest returns as `answer`.
KNOWN_ANSWER = (0.257, 0.4402, 0.3028)
TOLERANCE = 1e-4
DECIMALS = 4


class SelfTestMismatchError(ValueError):
    """The computation ran but gave a different answer."""


def network(device: torch.device) -> nn.Module:
    net = build_network(len(INPUT), len(KNOWN_ANSWER), LAYERS)
    net.load_state_dict({name: torch.tensor(value, dtype=torch.float32) for name, value in WEIGHTS.items()})
    return net.to(device).eval()


def compute(device: torch.device) -> list[float]:
    """The class probabilities of INPUT, unrounded (float32 on `device`)."""
    net = network(device)
    with torch.inference_mode():
        logits = net(torch.tensor([INPUT], dtype=torch.float32, device=device))
        return [float(p) for p in torch.softmax(logits, dim=1)[0].cpu().tolist()]


def run(device: torch.device) -> list[float]:
    """The answer rounded to DECIMALS; raises SelfTestMismatchError unless it is KNOWN_ANSWER within TOLERANCE.

    Blocking (a forward pass, and on CUDA possibly the context start-up): call it in a worker thread.
    """
    result = compute(device)
    answer = [round(value, DECIMALS) for value in result]
    if len(result) != len(KNOWN_ANSWER) or not all(
        math.isfinite(got) and abs(got - want) <= TOLERANCE for got, want in zip(result, KNOWN_ANSWER, strict=False)
    ):
        raise SelfTestMismatchError(f"answer {answer} differs from the known answer {list(KNOWN_ANSWER)}")
    return answer
