"""Which precision training and evaluation run in (trainer.amp), and the autocast context for it."""

import contextlib

import torch


def cpu_has_native_bf16(cpuinfo="/proc/cpuinfo"):
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX flags). Without them oneDNN
    emulates bf16, which measured slower than fp32 (see the README's speed table)."""
    try:
        flags = set(open(cpuinfo).read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_amp(device, amp):
    """(autocast dtype or None, one line saying why) for the config's `trainer.amp` on `device`.
    auto: bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere."""
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
        if cpu_has_native_bf16():
            return torch.bfloat16, "bf16 autocast: this CPU has native bf16 (AVX-512 BF16 or AMX)"
        return None, "fp32: this CPU has no native bf16 (no AVX-512 BF16 or AMX), where bf16 is slower"
    return None, f"fp32: mixed precision is not used on {device.type}"


def autocast_for(device, amp):
    """A context factory: autocast in the precision that `resolve_amp` picks, or nothing."""
    return autocast_of(device, resolve_amp(device, amp)[0])


def autocast_of(device, dtype):
    """A context factory: autocast to `dtype` on `device`, or nothing when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)
