import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from base import BaseDataLoader
from base.base_data_loader import ArrayDataset
from data_loader.datasets import load_splits
from data_loader.transforms import (
    NormalizeCollate,
    build_augment,
    build_eval_transform,
    build_train_transform,
    check_augment,
    reseed_batch,
)
from utils.errors import ArgumentError, DataError


def channel_stats(images, where="data", chunk=2**22):
    """Per-channel mean and std of uint8 HWC images, in [0, 1] units, in two passes over chunks of
    `chunk` pixels: the memory of one chunk in float64 (100 MB), never of the whole data set or of
    one large picture. A channel of one value everywhere (std 0) cannot be normalised: one line."""
    flat = images.reshape(-1, images.shape[-1])
    chunks = [flat[i : i + chunk] for i in range(0, len(flat), chunk)]
    mean = sum(c.sum(axis=0, dtype=np.float64) for c in chunks) / len(flat)
    var = sum(np.square(c - mean).sum(axis=0) for c in chunks) / len(flat)
    if not var.all():
        raise DataError(
            f"{where}: its {len(images)} training images have the same value everywhere in channel "
            f"{int(np.argmin(var))} (std 0), so they cannot be normalised: are they blank?"
        )
    return {
        "mean": [round(float(m), 6) for m in mean / 255.0],
        "std": [round(float(s), 6) for s in np.sqrt(var) / 255.0],
    }


def say_reading(data_dir):
    """One line before the data is read: an archive is decompressed and decoded in full, which takes
    a minute for CIFAR-10's 50,000 JPEGs in a .tar.xz (the same process reads it once)."""
    path = Path(data_dir).expanduser()
    if path.is_file():
        what = f"{path} ({path.stat().st_size / 2**20:,.0f} MB archive: every image is decompressed and decoded once)"
    else:
        what = str(path)
    logging.getLogger("data").info(f"Data: reading {what} ...")


FLIPS = ("random", "alternate")


def alternating_flip(augmentations, flip, n, seed):
    """(the augmentations the per-image pipeline runs, the first-flip bit of each of n images or None).
    flip "alternate" (airbench's): the HorizontalFlip entry leaves the pipeline, and each image is
    mirrored on every other epoch instead, a seeded half of them in the odd epochs, the rest in the
    even ones; "random": the augmentations as they are (a coin per image and epoch)."""
    if flip == "random":
        return augmentations, None
    kept = [e for e in augmentations or [] if not (isinstance(e, dict) and e.get("type") == "HorizontalFlip")]
    if len(kept) == len(augmentations or []):
        raise ArgumentError("flip", '"alternate" takes the place of a HorizontalFlip in the augmentations; add one')
    return kept, np.random.default_rng([seed, 2]).integers(0, 2, size=n).astype(np.int64)


NO_VALIDATION = "validation_split is 0 and there is no test/ split to validate on; set --validation_split (e.g. 5000)"


def note_shared_images(splits, data_dir):
    """A warning when test images are also training images (the same pixels: a copied folder, say):
    a figure on that test split would count images the network trained on."""
    if "train" not in splits or "test" not in splits:
        return
    seen = {hashlib.blake2b(image.tobytes(), digest_size=16).digest() for image in splits["train"].images}
    shared = sum(hashlib.blake2b(image.tobytes(), digest_size=16).digest() in seen for image in splits["test"].images)
    if shared:
        logging.getLogger("data").warning(
            f"warning: {data_dir}: {shared} of its {len(splits['test'].images)} test images are also training images "
            "(the same pixels); a figure on that test split counts images the network trained on"
        )


def auto_workers(num_workers):
    """The DataLoader worker processes for `num_workers` ("auto": the cores less one, shared by
    torchrun's processes); more than the machine's cores are capped at that count, with a note."""
    cores = os.cpu_count() or 1
    if num_workers == "auto":  # the cores of this machine, shared by torchrun's processes on it
        per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        return max(0, min(15, per_process - 1))
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ArgumentError("num_workers", f'expected "auto" or an integer >= 0, got {num_workers!r}')
    if num_workers > cores:
        logging.getLogger("data").warning(
            f"note: num_workers {num_workers} is more than this machine's {cores} cores; using {cores}"
        )
        return cores
    return num_workers


class Cifar10DataLoader(BaseDataLoader):
    """CIFAR-10 (or any image-folder data of the same layout) with albumentations augmentation.

    training=True: the train split (or a seeded subset of `train_subset` of its images, for quick
    searches; 0 = all), minus a seeded validation subset of `validation_split` images (count or
    fraction); with validation_split 0 the test split validates. max_dataset_pixels: what the data may
    decode in all, judged from the images' headers before any is decoded (null: 250 million, 750 MB
    of pixels; CIFAR-10 has 61 million). read_limit: decode at most this many images of each split, a
    seeded subset (--fast_dev_run's quick read; null: all). flip: "random" (HorizontalFlip as
    configured) or "alternate" (each image mirrored on every other epoch; alternating_flip).
    training=False (through
    `for_test`): the test split only, normalised with the `stats` the model was trained with."""

    def __init__(
        self,
        data_dir: str,
        batch_size: int = 256,
        shuffle: bool = True,
        validation_split: int | float = 0,
        num_workers: int | str = "auto",
        download: bool = True,
        augmentations: list | None = None,
        split_seed: int = 0,
        pin_memory: bool = True,
        training: bool = True,
        stats: dict | None = None,
        train_subset: int = 0,
        max_dataset_pixels: int | None = None,
        read_limit: int | None = None,
        flip: str = "random",
    ):
        if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
            raise ArgumentError("split_seed", f"expected an integer >= 0, got {split_seed!r}")
        if max_dataset_pixels is not None and (
            isinstance(max_dataset_pixels, bool) or not isinstance(max_dataset_pixels, int) or max_dataset_pixels < 1
        ):
            raise ArgumentError("max_dataset_pixels", f"expected an integer >= 1 or null, got {max_dataset_pixels!r}")
        if flip not in FLIPS:
            raise ArgumentError("flip", f"expected one of {', '.join(map(repr, FLIPS))}, got {flip!r}")
        if read_limit is not None and (
            isinstance(read_limit, bool) or not isinstance(read_limit, int) or read_limit < 2
        ):
            raise ArgumentError("read_limit", f"expected an integer >= 2 or null, got {read_limit!r}")
        say_reading(data_dir)
        needs = self._needs(training, validation_split)
        splits = load_splits(data_dir, download, max_dataset_pixels, needs, read_limit)
        note_shared_images(splits, data_dir)
        workers = auto_workers(num_workers)
        self.data_dir = data_dir
        if training:
            dataset, valid = self._training_sets(
                splits, validation_split, split_seed, train_subset, augmentations, flip
            )
        else:
            dataset, valid, shuffle = self._test_set(splits, stats), None, False
        # the random part of the training pipeline, for previews (augmentations.png)
        self.augment = build_augment(augmentations, [255.0 * m for m in self.stats["mean"]])
        super().__init__(
            dataset,
            batch_size,
            shuffle,
            workers,
            valid_dataset=valid,
            pin_memory=pin_memory,
            collate_fn=NormalizeCollate(self.stats["mean"], self.stats["std"]),
        )

    @staticmethod
    def _needs(training, validation_split):
        """The splits this loader cannot do without, and what to say when one is missing."""
        if not training:
            return ()  # for_test says it in words of its own
        needs = [("train", "no train/ split to train on")]
        if validation_split == 0:
            needs.append(("test", NO_VALIDATION))
        return tuple(needs)

    def _training_sets(self, splits, validation_split, split_seed, train_subset, augmentations, flip="random"):
        """(the augmented training set, the validation set): a seeded validation subset of the train
        split, or the test split when validation_split is 0. Sets stats, classes and valid_name."""
        if "train" not in splits:
            raise DataError(f"{self.data_dir}: no train/ split to train on")
        train = splits["train"]
        pool = self.subset_indices(len(train.labels), train_subset, split_seed)
        train_idx, valid_idx = (pool[i] for i in self.split_indices(len(pool), validation_split, split_seed))
        train_images = train.images[train_idx]
        self.stats, self.classes = channel_stats(train_images, self.data_dir), train.classes
        augmentations, flip_first = alternating_flip(augmentations, flip, len(train_images), split_seed)
        if len(train_images):
            check_augment(augmentations, [255.0 * m for m in self.stats["mean"]], train_images[0])
        transform = build_train_transform(augmentations, self.stats["mean"])
        labels = train.labels[train_idx]
        dataset = ArrayDataset(train_images, labels, transform, reseed=reseed_batch, flip_first=flip_first)
        if len(valid_idx):
            self.valid_name = "validation"
            names = train.names[valid_idx] if train.names is not None else None
            valid = ArrayDataset(train.images[valid_idx], train.labels[valid_idx], build_eval_transform(), names=names)
        elif "test" in splits:
            self.valid_name, test = "test", splits["test"]
            valid = ArrayDataset(test.images, test.labels, build_eval_transform(), names=test.names)
        else:
            raise DataError(f"{self.data_dir}: {NO_VALIDATION}")
        return dataset, valid

    def _test_set(self, splits, stats):
        """The test split, normalised with `stats` (the checkpoint's; else the data's own)."""
        if "test" not in splits:
            raise DataError(
                f"{self.data_dir}: no test/ split to evaluate (expected test/<class>/*.jpg or a CIFAR-10 root)"
            )
        test = splits["test"]
        self.stats = stats or channel_stats(splits["train"].images if "train" in splits else test.images, self.data_dir)
        self.classes, self.valid_name = test.classes, "test"
        return ArrayDataset(test.images, test.labels, build_eval_transform(), names=test.names)

    @classmethod
    def for_test(cls, args, stats):
        return cls(**{**args, "training": False, "shuffle": False, "stats": stats})
