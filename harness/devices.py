"""Devices: turn ``trainer.device`` into a torch device and name it for the records."""

from __future__ import annotations

import platform

import torch

from harness.config import ConfigError


def resolve(name: str, dtype: str = "float32") -> torch.device:
    """``auto`` is the first CUDA device, else MPS (which computes in float32 only), else the
    CPU; a device named explicitly must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if torch.backends.mps.is_available() and dtype == "float32":
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise ConfigError("trainer.device", name, f"this machine has {count} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.device", name, "MPS is not available on this machine")
    if device.type == "mps" and dtype != "float32":
        raise ConfigError("trainer.dtype", dtype, "MPS computes in float32 only")
    return device


def describe(device: torch.device) -> str:
    """A human name: the GPU's model, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return platform.processor() or platform.machine() or "cpu"
