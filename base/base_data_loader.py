import signal
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils import distributed
from utils.errors import ArgumentError, DataError


def _leave_stops_to_the_main_process(worker_id):
    """Ctrl-C reaches the whole process group, and so does a SIGTERM from `kill -- -PGID`, pkill or
    a job scheduler; the main process stops the run and its workers (a worker whose main process is
    gone ends by itself), so a worker ignores both: otherwise it may print a KeyboardInterrupt or
    ConnectionResetError traceback, or die first, and the main process's shutdown of its workers
    then ended in a 'DataLoader worker is killed by signal' traceback instead of the resume line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.excepthook = _quiet_when_the_main_process_hangs_up


def _quiet_when_the_main_process_hangs_up(kind, value, traceback):
    """A worker hands each batch's tensors to the main process through multiprocessing's
    resource_sharer: a thread of the worker that passes file descriptors and prints whatever it
    raises with sys.excepthook. A main process stopped mid-handover (Ctrl-C, SIGTERM) drops the
    connection, and that thread printed a ConnectionResetError traceback under the resume line.
    Only a dropped connection is quiet; anything else keeps its traceback."""
    if issubclass(kind, (ConnectionError, EOFError)):
        return
    sys.__excepthook__(kind, value, traceback)


def close_workers(loader):
    """Stop a DataLoader's persistent worker processes now. Left to the garbage collector (or to the
    exit of the process) their shutdown waited out a 5-second timeout per worker: 20 s at the end of
    a run with 2 workers and a validation loader. None: nothing to do."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        loader._iterator = None
        iterator._shutdown_workers()


class SeededBatchSampler(Sampler):
    """Batches of `(index, epoch_seed, batch_number, epoch)`. The epoch's order and seed come from torch's
    global generator (saved in checkpoints), and the dataset seeds its augmentation per batch from
    `(epoch_seed, batch_number)`: every batch has its own random stream whichever worker builds it,
    and a resumed run sees exactly the images an uninterrupted one would.

    Under DDP (world > 1) `batch_size` is the global batch: rank 0's epoch seed is used by all, each
    global batch is cut into `world` disjoint slices of batch_size / world, rank r takes slice r
    with its own augmentation stream (batch number x world + r), and an incomplete last global
    batch is dropped so that every rank takes the same number of steps."""

    def __init__(self, n, batch_size, shuffle, rank=0, world=1):
        self.n, self.batch_size, self.shuffle, self.rank, self.world = n, batch_size, shuffle, rank, world
        if world > 1 and batch_size % world:  # the config's batch size is checked in trainer/preflight.py
            raise ValueError(f"the global batch {batch_size} does not split evenly over {world} processes")
        self.epoch = 1  # set_epoch: the trainer's epoch, for what depends on it (the alternating flip)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        full, rest = divmod(self.n, self.batch_size)
        if self.world > 1:
            return full
        return full + (rest > 1)  # a last batch of one image would break BatchNorm: drop it

    def __iter__(self):
        epoch_seed = distributed.broadcast_object(int(torch.randint(0, 2**62, ()).item()))
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(epoch_seed)).tolist()
        else:
            order = list(range(self.n))
        share = self.batch_size // self.world
        for number in range(len(self)):
            batch = order[number * self.batch_size : (number + 1) * self.batch_size]
            if self.world > 1:
                batch = batch[self.rank * share : (self.rank + 1) * share]
            yield [(i, epoch_seed, number * self.world + self.rank, self.epoch) for i in batch]


class ShardSampler(Sampler):
    """Rank r of `world` evaluates images r, r + world, r + 2 world, ... (no padding, no repeats:
    the all-reduced sums and counts are exact)."""

    def __init__(self, n, rank, world):
        self.indices = range(rank, n, world)

    def __len__(self):
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


class PlainDataset(Dataset):
    """Lets any map-style dataset (`dataset[i] -> (image tensor, label)`) take SeededBatchSampler's
    `(index, epoch_seed, batch_number, epoch)` items; its own randomness is its own affair. Attributes
    (e.g. `images`) are those of the wrapped dataset."""

    def __init__(self, dataset):
        self.inner = dataset

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        return self.inner[index]

    def __getitems__(self, items):
        return [self.inner[i[0] if isinstance(i, tuple) else i] for i in items]

    def __getattr__(self, name):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


class BaseDataLoader(DataLoader):
    """A training DataLoader that also holds its validation set (`split_validation()`).

    Unlike pytorch-template, the validation images are a separate dataset with the evaluation
    transform, so they are never augmented.

    The contract train.py, test.py, report.py, export.py and the Trainer use, and all they use:
      Loader(**data_loader.args)        the run's training data, and its validation split through
                                        `split_validation()` (train.py, report.py, export.py);
      Loader.for_test(args, stats)      the test split, unshuffled and unaugmented, normalised with
                                        the training `stats` a checkpoint saved (test.py); a dataset
                                        without a test split leaves the default, which says so.
    A subclass sets, before calling BaseDataLoader.__init__:
      classes     list of class names (label k is classes[k]), saved in checkpoints;
      stats       {"mean": [...], "std": [...]} per channel in [0, 1] units, saved in checkpoints;
      valid_name  what the validation loader holds: "validation" or "test";
      augment     optional: the random part of the training augmentation on uint8 HWC images
                  (for the report's preview), or None.
    Any map-style dataset works (`dataset[i] -> (CHW tensor, label)`); one that also keeps its
    pictures as a uint8 NHWC array `images` (`pictures(loader)`) gets the image grids and Grad-CAM
    of test.py and the report, and int8 calibration."""

    INTERFACE = ("classes", "stats", "valid_name")
    augment = None

    def __init__(
        self, dataset, batch_size, shuffle, num_workers, valid_dataset=None, pin_memory=False, collate_fn=None
    ):
        if not isinstance(batch_size, int) or batch_size < 1:  # the config's is checked by its schema
            raise ArgumentError("batch_size", f"expected a positive integer, got {batch_size!r}")
        missing = [name for name in self.INTERFACE if not hasattr(self, name)]
        if missing and type(self) is not BaseDataLoader:  # a bug in the subclass, not the config: a traceback
            raise TypeError(f"{type(self).__name__} must set {', '.join(missing)} before BaseDataLoader.__init__")
        if not isinstance(dataset, ArrayDataset):
            dataset = PlainDataset(dataset)
        if valid_dataset is not None and not isinstance(valid_dataset, ArrayDataset):
            valid_dataset = PlainDataset(valid_dataset)
        self.valid_dataset = valid_dataset
        # The loaders draw their workers' base seeds from a generator of their own: persistent
        # workers draw once per run, and a draw from the global generator would shift every
        # later epoch's order after a resume.
        self._loader_kwargs = dict(
            num_workers=num_workers,
            worker_init_fn=_leave_stops_to_the_main_process,
            pin_memory=pin_memory and torch.cuda.is_available(),
            persistent_workers=num_workers > 0,
            generator=torch.Generator(),
            collate_fn=collate_fn,
        )
        rank, world = distributed.rank(), distributed.world_size()
        sampler = SeededBatchSampler(len(dataset), batch_size, shuffle, rank, world)
        super().__init__(dataset, batch_sampler=sampler, **self._loader_kwargs)
        self.eval_batch_size = batch_size // world

    @classmethod
    def for_test(cls, args, stats):
        """A loader over the data's test split (see the class docstring): `args` are the config's
        data_loader.args, `stats` the checkpoint's training statistics (None: the data's own)."""
        raise DataError(
            f"data_loader.type: {cls.__name__} has no test split (it does not define for_test); "
            "report.py evaluates a run on its own validation split"
        )

    @property
    def image_size(self):
        """(height, width) of the images, from the first one."""
        images = pictures(self)
        if images is not None:
            return tuple(images.shape[1:3])
        return tuple(self.dataset[0][0].shape[-2:])

    def split_validation(self):
        if self.valid_dataset is None:
            return None
        shard = (
            ShardSampler(len(self.valid_dataset), distributed.rank(), distributed.world_size())
            if distributed.is_distributed()
            else None
        )
        return DataLoader(
            self.valid_dataset, batch_size=self.eval_batch_size, shuffle=False, sampler=shard, **self._loader_kwargs
        )

    @staticmethod
    def subset_indices(n, subset, seed):
        """The sorted indices of a seeded subset of `subset` of range(n) images (0: all of them)."""
        if isinstance(subset, bool) or not isinstance(subset, int) or not 0 <= subset <= n:
            raise ArgumentError("train_subset", f"expected an integer from 0 (all) to {n}, got {subset!r}")
        if subset in (0, n):
            return np.arange(n)
        return np.sort(np.random.default_rng([seed, 1]).permutation(n)[:subset])

    @staticmethod
    def split_indices(n, validation_split, seed):
        """A fixed, seeded (train, validation) split of range(n). `validation_split` is a count
        (int >= 0) or a fraction (0 <= float < 1)."""
        if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float)):
            raise ArgumentError("validation_split", f"expected a count or a fraction, got {validation_split!r}")
        if isinstance(validation_split, float):
            if not 0.0 <= validation_split < 1.0:
                raise ArgumentError("validation_split", f"a fraction must be in [0, 1), got {validation_split}")
            n_valid = held_out_count(n, validation_split)
            if validation_split > 0 and n_valid == 0:  # 0 would quietly validate on the test split instead
                raise ArgumentError(
                    "validation_split",
                    f"{validation_split} of {n} images is less than one image; ask for a count or a larger fraction",
                )
        else:
            n_valid = validation_split
        if not 0 <= n_valid < n:
            raise ArgumentError(
                "validation_split", f"{n_valid} images asked for validation, but the training split holds {n}"
            )
        order = np.random.default_rng(seed).permutation(n)
        # validation keeps the seeded order, not the files' (class by class): its first batches, all that
        # trainer.limit_batches and --fast_dev_run read, then hold every class
        return np.sort(order[n_valid:]), order[:n_valid]


def held_out_count(n, validation_split):
    """How many of n images `validation_split` holds out: a count as it is, a fraction of n rounded."""
    return int(round(n * validation_split)) if isinstance(validation_split, float) else validation_split


def pictures(loader):
    """The uint8 NHWC pictures of a loader's dataset, or None when the dataset keeps none."""
    return getattr(loader.dataset, "images", None) if loader is not None else None


class ArrayDataset(Dataset):
    """uint8 HWC images in memory + an albumentations transform -> (CHW tensor, label).
    flip_first: with the alternating flip, a 0/1 per image, the image mirrored in the epochs whose
    parity differs from it (so every other epoch, half of the images first); None: no such flip."""

    def __init__(self, images, labels, transform, reseed=None, names=None, flip_first=None):
        self.images, self.labels, self.transform, self._reseed = images, labels, transform, reseed
        self.names = names  # each image's file name, where the data has them (the pictures use them)
        self.views = None  # data_loader.views.FixedViews: each image one of k fixed views (trainer.distill.views)
        self.flip_first = flip_first

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(image=self.images[index])["image"], int(self.labels[index])

    def __getitems__(self, items):
        if not (items and isinstance(items[0], tuple)):
            return [self[i] for i in items]
        _, epoch_seed, number, epoch = items[0]  # from SeededBatchSampler
        items = [item[0] for item in items]
        if self.views is not None:
            return self.views.samples(self, items, epoch_seed, number)
        if self._reseed is not None:
            self._reseed(self.transform, epoch_seed, number)
        samples = [self[i] for i in items]
        if self.flip_first is not None:
            samples = [(image.flip(-1), label) if self.flip_first[i] != epoch % 2 else (image, label)
                       for i, (image, label) in zip(items, samples)]  # fmt: skip
        return samples
