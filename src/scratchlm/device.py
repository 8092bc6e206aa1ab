"""Turning a device string into a torch.device that exists on this machine, or a clear error."""

from __future__ import annotations

import torch

from scratchlm.errors import DeviceError


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else must name a device this machine has."""
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"device {device!r} is not a device name; use cpu, cuda, cuda:N, mps or auto.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} asked for CUDA, but this machine has no usable CUDA GPU; use cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r} asked for Apple MPS, which is not available here; use cpu.")
    return dev
