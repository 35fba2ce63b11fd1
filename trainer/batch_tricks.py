"""What the training loop may do to a batch before its step, each one a config option of the trainer
section (null: off): progressive resizing, selective backprop, MixUp / CutMix. `BatchTricks` holds
the three and is told the epoch; with all three off it changes nothing."""

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from utils.log_keys import IMAGE_SIZE, MIX_P


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


@torch.no_grad()
def select_hardest(model, images, target, keep, autocast):
    """The `keep` fraction of the batch with the highest loss, scored by the model in eval mode
    (batch statistics of the scoring pass would otherwise enter BatchNorm's running estimates)."""
    was_training = model.training
    model.eval()
    with autocast():
        losses = F.cross_entropy(model(images).float(), target, reduction="none")
    model.train(was_training)
    n = max(1, round(keep * len(target)))
    idx = losses.topk(n).indices.sort().values
    return images[idx], target[idx]


class BatchTricks:
    """trainer.progressive_resize, trainer.selective_backprop and trainer.mix, for one run."""

    def __init__(self, cfg, num_classes, image_size, epochs):
        resize, selective, mix = cfg.get("progressive_resize"), cfg.get("selective_backprop"), cfg.get("mix")
        full = image_size[0]
        self.sizes = resize_schedule(resize["min_size"], resize["until"], epochs, full) if resize else {}
        self.full_size = full
        self.keep = selective["keep"] if selective else None
        self.mix_cfg = mix
        self.mixer = None
        if mix:
            kind = v2.MixUp if mix["type"] == "MixUp" else v2.CutMix
            self.mixer = kind(alpha=mix["alpha"], num_classes=num_classes)
        self.size, self.mix_p = full, 0.0

    KEYS = ("progressive_resize", "selective_backprop", "mix")

    @classmethod
    def from_config(cls, cfg, num_classes, image_size, epochs):
        """The run's BatchTricks, or None when the trainer section turns all three off."""
        return cls(cfg, num_classes, image_size, epochs) if any(cfg.get(k) for k in cls.KEYS) else None

    def start_epoch(self, epoch):
        """Set this epoch's image size and mixing probability; returns them for the log."""
        self.size = self.sizes.get(epoch, self.full_size)
        if self.mix_cfg:
            ramp = self.mix_cfg["ramp_epochs"]
            self.mix_p = self.mix_cfg["p"] * (min(1.0, epoch / ramp) if ramp else 1.0)
        logged = {IMAGE_SIZE: self.size} if self.sizes else {}
        return logged | ({MIX_P: round(self.mix_p, 4)} if self.mix_cfg else {})

    def __call__(self, model, images, target, autocast):
        """(images, target for the metrics, target for the loss): the last may be soft (mixed)."""
        if self.size != images.shape[-1]:
            channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", antialias=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
        if self.keep is not None:
            images, target = select_hardest(model, images, target, self.keep, autocast)
        loss_target = target
        if self.mixer is not None and self.mix_p > 0 and torch.rand(()) < self.mix_p:
            images, loss_target = self.mixer(images, target)
        return images, target, loss_target
