"""Turning a device string into a torch.device that exists on this machine, or a clear error; CUDA's switches."""

from __future__ import annotations

import torch

from scratchlm.errors import ConfigError, DeviceError

# torch.backends.cuda's switch for each SDPA kernel (`TrainConfig.sdpa_kernel`).
_SDPA_SWITCHES = {
    "flash": torch.backends.cuda.enable_flash_sdp,
    "cudnn": torch.backends.cuda.enable_cudnn_sdp,
    "efficient": torch.backends.cuda.enable_mem_efficient_sdp,
    "math": torch.backends.cuda.enable_math_sdp,
}


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
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(
            f"device {device!r} is a device of type '{dev.type}', which scratchlm does not run on; use cpu, cuda, "
            "cuda:N, mps or auto."
        )
    return dev


def configure_cuda(device: torch.device, sdpa_kernel: str = "auto") -> None:
    """TF32 matmuls on CUDA (weights stay fp32), and the SDPA kernels allowed (process-wide switches).

    sdpa_kernel "auto" leaves PyTorch's switches as they are; a kernel name allows that kernel alone.
    torch.compile reads the switches when it traces, so they must be set before the first step.
    """
    if device.type != "cuda":
        if sdpa_kernel != "auto":
            raise ConfigError(
                f"train.sdpa_kernel = '{sdpa_kernel}' picks a CUDA attention kernel, but the device is "
                f"{device.type}; leave train.sdpa_kernel = 'auto' there."
            )
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if sdpa_kernel != "auto":
        allow_only(sdpa_kernel)


def allow_only(sdpa_kernel: str) -> None:
    """Switch every SDPA kernel off but `sdpa_kernel` (one of flash, cudnn, efficient, math)."""
    for name, switch in _SDPA_SWITCHES.items():
        switch(name == sdpa_kernel)
