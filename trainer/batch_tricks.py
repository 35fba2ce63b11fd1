"""What the training loop may do to a batch before its step, each one a config option of the trainer
section (null: off): progressive resizing and MixUp / CutMix. `BatchTricks` holds the two and is
told the epoch; with both off it changes nothing."""

import torch
import torch.nn.functional as F

from logger.keys import IMAGE_SIZE, MIX_P
from trainer.hooks import StepHook
from utils.runtime import torchvision_module


def resize_schedule(min_size, until, epochs, full_size):
    """Image side per epoch (1-based index, full size from `until` x epochs on): from min_size up to
    full_size linearly, in steps of 4 pixels."""
    last_small = int(until * epochs)  # epochs 1..last_small train below the full size
    sizes = {}
    for epoch in range(1, epochs + 1):
        if epoch > last_small:
            sizes[epoch] = full_size
        else:
            size = min_size + (full_size - min_size) * (epoch - 1) / max(1, last_small)
            sizes[epoch] = min(full_size, int(size) // 4 * 4)
    return sizes


class BatchTricks(StepHook):
    """trainer.progressive_resize and trainer.mix, for one run."""

    def __init__(self, cfg, num_classes, image_size, epochs):
        resize, mix = cfg.get("progressive_resize"), cfg.get("mix")
        full = image_size[0]
        self.sizes = resize_schedule(resize["min_size"], resize["until"], epochs, full) if resize else {}
        self.full_size = full
        self.mix_cfg = mix
        self.mixer = None
        if mix:
            v2 = torchvision_module("transforms.v2")  # only a run that mixes needs torchvision
            kind = v2.MixUp if mix["type"] == "MixUp" else v2.CutMix
            self.mixer = kind(alpha=mix["alpha"], num_classes=num_classes)
        self.size, self.mix_p = full, 0.0

    KEYS = ("progressive_resize", "mix")

    @classmethod
    def from_config(cls, cfg, num_classes, image_size, epochs):
        """The run's BatchTricks, or None when the trainer section turns both off."""
        return cls(cfg, num_classes, image_size, epochs) if any(cfg.get(k) for k in cls.KEYS) else None

    def start_epoch(self, epoch):
        """Set this epoch's image size and mixing probability; returns them for the log."""
        self.size = self.sizes.get(epoch, self.full_size)
        if self.mix_cfg:
            ramp = self.mix_cfg["ramp_epochs"]
            self.mix_p = self.mix_cfg["p"] * (min(1.0, epoch / ramp) if ramp else 1.0)
        logged = {IMAGE_SIZE: self.size} if self.sizes else {}
        return logged | ({MIX_P: round(self.mix_p, 4)} if self.mix_cfg else {})

    def batch(self, images, target):
        """(images, target for the loss): resized to this epoch's size, then mixed (a soft target)."""
        if self.size != images.shape[-1]:
            channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
        if self.mixer is not None and self.mix_p > 0 and torch.rand(()) < self.mix_p:
            images, target = self.mixer(images, target)
        return images, target
