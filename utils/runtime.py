"""What every run sets up first: its seeds and its device."""

import random

import numpy as np
import torch


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name):
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device."""
    from utils.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: {name!r} is not a device (expected auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device: {name!r} is not supported here (expected auto, cpu, cuda or cuda:N)")
    if (
        device.type == "cuda"
        and device.index is not None
        and torch.cuda.is_available()
        and device.index >= torch.cuda.device_count()
    ):
        raise ConfigError(f"device: {name!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for, but CUDA is not available on this machine (use --device cpu)")
    return device


TESTED_PAIR = "torch==2.14.1 torchvision==0.29.1"


def torchvision_module(name):
    """`torchvision.<name>`, imported when first needed; a torchvision built for another torch (it
    fails as `operator torchvision::nms does not exist`) is one line naming both versions and the pair
    to install."""
    import importlib

    try:
        return importlib.import_module(f"torchvision.{name}")
    except (RuntimeError, ImportError, OSError) as e:
        from importlib.metadata import PackageNotFoundError, version

        from utils.errors import UserError

        try:
            installed = f"torchvision {version('torchvision')}"
        except PackageNotFoundError:
            installed = "no torchvision"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise UserError(
            f"{installed} does not load beside torch {torch.__version__} ({first}); install the two together, "
            f"as requirements.txt pins them:  pip install {TESTED_PAIR}"
        ) from None
