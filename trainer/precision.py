"""Which precision training and evaluation run in (trainer.amp, trainer.channels_last): one
`Precision` that the loops take whole."""

import contextlib
from dataclasses import dataclass

import torch


def resolve_amp(device, amp):
    """(autocast dtype or None, one line saying why) for the config's `trainer.amp` on `device`.
    auto: bf16 on CUDA, fp32 on the CPU. On the CPU, bf16 autocast measured slower than fp32 where
    oneDNN emulates it, and no faster even with AMX and AVX-512 BF16 (docs/speed.md), while a short
    schedule in bf16 ended a point lower; "bf16" still forces it."""
    if amp == "off":
        return None, "fp32 (trainer.amp is off)"
    if device.type == "cuda":
        if amp == "fp16":
            return torch.float16, "fp16 autocast with gradient scaling on CUDA"
        return torch.bfloat16, "bf16 autocast on CUDA"
    if device.type == "cpu":
        if amp == "fp16":
            return None, "fp32: trainer.amp fp16 applies on CUDA only"
        if amp == "bf16":
            return torch.bfloat16, "bf16 autocast on the CPU, as trainer.amp asks"
        return None, "fp32 on the CPU (bf16 autocast is no faster there; trainer.amp bf16 forces it)"
    return None, f"fp32: mixed precision is not used on {device.type}"


def autocast_of(device, dtype):
    """A context factory: autocast to `dtype` on `device`, or nothing when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class Precision:
    """How a batch is computed: `autocast` (a context factory), `scaler` (fp16's GradScaler, else
    None) and the memory format of the images (channels_last)."""

    autocast: object = contextlib.nullcontext
    scaler: object = None
    channels_last: bool = False

    @classmethod
    def of_run(cls, device, amp, channels_last=False):
        """(the Precision for trainer.amp and trainer.channels_last on `device`, one line saying why)."""
        dtype, why = resolve_amp(device, amp)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return cls(autocast_of(device, dtype), scaler, channels_last), why


PRECISE = Precision()  # fp32, contiguous: the loops' default
