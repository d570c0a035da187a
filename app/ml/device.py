"""Choose the torch device for training from TORCH_DEVICE."""

from __future__ import annotations

import contextlib

import torch

from app.core.config import ConfigError


def resolve_device(setting: str, name: str = "TORCH_DEVICE") -> torch.device:
    """`auto` picks CUDA when present; `cuda` without a usable GPU is a start-up error, not a silent fallback.

    `name` is the setting the value came from, for the message (WORKER_DEVICE for training workers).
    """
    if setting == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise ConfigError(f"{name}=cuda but CUDA is not available on this host (use cpu, or another host)")
    return torch.device("cuda" if available else "cpu")


def configure_threads(threads: int) -> None:
    """Cap torch's CPU threads: small networks gain nothing from more and would starve the web workers.

    With OpenMP the setting is per thread (new threads inherit it), so call it from the thread that
    runs inference before starting others.
    """
    torch.set_num_threads(threads)
    # Inter-op threads can be set once per process, before any parallel work; later calls keep the first value.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)
