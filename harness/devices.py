"""Devices: turn ``trainer.device`` into a torch device, name it for the records, and give
sweep workers a GPU each.

A sweep's worker that owns a GPU (a slot) sees only that GPU: ``CUDA_VISIBLE_DEVICES`` is set
to the GPU's name before CUDA starts, and ``HARNESS_GPU`` to its index N as the sweep's own
process numbers it (``cuda:N``, the name a config uses). There ``auto``, ``cuda`` and
``cuda:N`` all mean that GPU (torch's ``cuda:0`` in the worker), and runs record ``cuda:N``.
"""

from __future__ import annotations

import os
import platform

import torch

from harness.config import ConfigError

SLOT_GPU = "HARNESS_GPU"  # the sweep's index of the one GPU a slot worker sees


def slot_environment(index: int, name: str) -> dict[str, str]:
    """The environment of a worker that owns the sweep's GPU ``index``, which
    ``CUDA_VISIBLE_DEVICES`` calls ``name`` (set before CUDA starts)."""
    return {"CUDA_VISIBLE_DEVICES": name, SLOT_GPU: str(index)}


def gpu_ids() -> list[str]:
    """The CUDA devices a sweep can give its workers (as ``CUDA_VISIBLE_DEVICES`` names
    them), none without CUDA."""
    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [n.strip() for n in visible.split(",")] if visible else []
    count = torch.cuda.device_count()
    return names[:count] if names else [str(index) for index in range(count)]


def resolve(name: str, dtype: str = "float32") -> torch.device:
    """``auto`` is the first CUDA device, else MPS (which computes in float32 only), else the
    CPU; a device named explicitly must exist here. In a GPU slot, see the module docstring."""
    slot = os.environ.get(SLOT_GPU)
    if slot is not None and name in ("auto", "cuda", f"cuda:{slot}"):
        return torch.device("cuda", 0)
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


def label(device: torch.device) -> str:
    """The device as runs record it: ``cpu``, ``mps`` or ``cuda:N`` as the sweep numbers it."""
    if device.type == "cuda":
        return f"cuda:{os.environ.get(SLOT_GPU, device.index or 0)}"
    return str(device)


def memory_budget(device: torch.device, fraction: float) -> int:
    """``fraction`` of the memory free now on ``device`` (a GPU's, else the host's), in bytes."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * fraction)
    pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(pages * fraction)


def describe(device: torch.device) -> str:
    """A human name: the GPU's model, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return platform.processor() or platform.machine() or "cpu"
