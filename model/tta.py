"""Test-time augmentation: the views of a batch whose logits are averaged. Evaluation (training's
last lines, test.py), the PyTorch predictor and the ONNX predictor all use these, so a TTA figure
means the same thing everywhere. It is always reported as its own figure, never as the plain one."""

import torch.nn.functional as F

CHOICES = ("none", "flip", "multicrop")
LABELS = {"flip": "Flip", "multicrop": "Multi-crop (mirror x 1-pixel shifts)"}


def _mirrored(images, weight):
    return [(weight / 2, images), (weight / 2, images.flip(3))]


def views(images, kind):
    """[(weight, view)] of an NCHW batch for `kind` (weights sum to 1). none: the batch; flip: each
    image and its mirror; multicrop (airbench's): the flip pair (weight 1/2) and the flip pairs of the
    image shifted one pixel up-left and one down-right, borders reflected (1/4 each): 6 passes."""
    if kind in (None, "none"):
        return [(1.0, images)]
    if kind == "flip":
        return _mirrored(images, 1.0)
    if kind == "multicrop":
        h, w = images.shape[-2:]
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
        return (
            _mirrored(images, 0.5)
            + _mirrored(padded[..., :h, :w].contiguous(), 0.25)
            + _mirrored(padded[..., 2:, 2:].contiguous(), 0.25)
        )
    raise ValueError(f"test-time augmentation: expected one of {', '.join(CHOICES)}, got {kind!r}")


def tta_logits(forward, images, kind):
    """The weighted mean of `forward(view)` (logits) over the views of `images` for `kind`."""
    parts = [weight * forward(view) for weight, view in views(images, kind)]
    return sum(parts[1:], parts[0])
