"""Albumentations pipelines. The training augmentations are data in the config: a list of
`{"type": <albumentations transform>, "args": {...}}`; the value "mean" for a `fill` argument
stands for the training set's mean colour. ToTensorV2 follows: images leave the per-image pipeline
as uint8 CHW tensors, and `NormalizeCollate` stacks and normalises each batch at once (per image,
albumentations' Normalize cost 110 us, more than the whole augmentation; per batch it is ~1 ms)."""

import random
import re
import warnings

import albumentations as A
import numpy as np
import pydantic
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import default_collate

from utils.errors import ConfigError
from utils.signature import check_call_args

FILL_MEAN = "mean"


def _build_one(entry, where, mean_colour):
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str) or set(entry) - {"type", "args"}:
        raise ConfigError(f'{where}: expected {{"type": <albumentations transform>, "args": {{...}}}}, got {entry!r}')
    cls = getattr(A, entry["type"], None)
    if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
        raise ConfigError(f"{where}.type: {entry['type']!r} is not an albumentations transform")
    args = entry.get("args", {})
    check_call_args(cls, args, f"{where}.args")
    args = dict(args)
    for key in ("fill", "fill_value"):
        if args.get(key) == FILL_MEAN:
            args[key] = tuple(float(round(c)) for c in mean_colour)
    for key, value in args.items():  # JSON has no tuples; albumentations ranges want them
        if isinstance(value, list):
            args[key] = tuple(value)
    try:
        with warnings.catch_warnings():  # the spec names ShiftScaleRotate; its advice to use Affine is noise
            warnings.filterwarnings("ignore", message="ShiftScaleRotate is a special case", category=UserWarning)
            return cls(**args)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err.get("loc", ())) or "args"
        raise ConfigError(f"{where}.args.{loc}: {err['msg']} ({entry['type']})") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}.args: {_first_error(e)} ({entry['type']})") from None


def _first_error(e):
    """albumentations re-raises pydantic errors as one long ValueError: keep 'key: message'."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) >= 3 and "validation error" in lines[0]:
        message = re.sub(r" \[type=.*", "", lines[2])
        return f"{lines[1]}: {message}"
    return lines[0] if lines else type(e).__name__


def build_augment(entries, mean_colour, where="data_loader.args.augmentations"):
    """The random part of the training pipeline, on uint8 HWC images (also used for previews: it
    starts seeded with 0, so a preview drawn from a new one is always the same)."""
    augment = A.Compose([_build_one(e, f"{where}[{i}]", mean_colour) for i, e in enumerate(entries or [])])
    reseed(augment, 0)
    return augment


def check_augment(entries, mean_colour, image, where="data_loader.args.augmentations"):
    """Apply a fresh copy of the augmentation to one training `image` (uint8 HWC): a transform that
    cannot run on pictures of this size (a crop larger than they are) or that changes their size is
    one line naming the list, before any run folder, instead of a traceback in a loader worker."""
    augment = build_augment(entries, mean_colour, where)
    for _ in range(4):  # a few draws, so that a transform with p < 1 most likely runs at least once
        try:
            out = augment(image=image)["image"]
        except Exception as e:  # albumentations' own error classes (CropSizeError, ValueError, ...)
            raise ConfigError(
                f"{where}: fails on a {image.shape[1]}x{image.shape[0]} training image "
                f"({type(e).__name__}: {str(e).splitlines()[0][:160]})"
            ) from None
        if out.shape != image.shape:
            raise ConfigError(
                f"{where}: turns a {image.shape[1]}x{image.shape[0]} image into {out.shape[1]}x{out.shape[0]}; "
                "the training images must keep the data's size (the network and the batches expect it)"
            )


def build_train_transform(entries, mean):
    """augmentations -> uint8 CHW tensor; `mean` (the data's, in [0, 1] units) gives the "mean" fill."""
    mean_colour = [255.0 * m for m in mean]
    return A.Compose([build_augment(entries, mean_colour), ToTensorV2()])


def build_eval_transform():
    return A.Compose([ToTensorV2()])


def normalization(stats):
    """(mean, scale) as (1, C, 1, 1) tensors in 0..255 units for the data statistics `stats`
    ({"mean": [...], "std": [...]} in [0, 1] units): a picture x of values 0..255 is normalised as
    (x - mean) * scale. The one place this arithmetic lives (the loader and the predictor use it)."""
    mean = torch.tensor([255.0 * m for m in stats["mean"]]).view(1, -1, 1, 1)
    scale = torch.tensor([1.0 / (255.0 * s) for s in stats["std"]]).view(1, -1, 1, 1)
    return mean, scale


class NormalizeCollate:
    """DataLoader collate_fn: stack (uint8 CHW image, label) samples and normalise the batch with
    the data's per-channel mean and std (in [0, 1] units) -> (float32 NCHW, int64 labels); a third
    item of each sample (fixed views' stored logits) is stacked too."""

    def __init__(self, mean, std):
        self.mean, self.scale = normalization({"mean": mean, "std": std})

    def __call__(self, samples):
        images, labels, *stored = default_collate(samples)  # stored: data_loader/views.py's third item
        return self.normalize(images), labels, *stored

    def normalize(self, images):
        """uint8 NCHW images -> float32, normalised."""
        return (images.float() - self.mean) * self.scale


def reseed(transform, seed):
    """Give `transform` (and every child) one fresh shared stream. Compose.set_random_seed would
    seed every child with the same number, so e.g. a flip and ToGray would draw the same first
    uniform and fire together; shared generators keep their draws independent."""
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


def batch_seed(epoch_seed, batch_index):
    """The augmentation seed of one batch: a function of the epoch's seed and the batch's place,
    so the images a batch gets are the same whatever worker builds it and after a resume."""
    return int(np.random.SeedSequence([epoch_seed, batch_index]).generate_state(1)[0])


def reseed_batch(transform, epoch_seed, batch_number):
    reseed(transform, batch_seed(epoch_seed, batch_number))
