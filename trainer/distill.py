"""Knowledge distillation (Hinton et al., 2015) from a trained teacher (trainer.distill): the loss is
(1 - alpha) x the criterion against the labels + alpha x T^2 x KL(teacher || student), both softmaxes
at temperature T. The teacher sees the same augmented images as the student (a consistent view,
Beyer et al., 2022), at full size while progressive resizing shrinks the student's; it is never
trained. Its forward pass on every batch is the price (with an airbench-class teacher on a CPU,
about as much again as the student's step), unless `views` k > 0: every training image is then one
of k fixed views (data_loader/views.py), the teacher's logits of each view are computed once
(k teacher passes over the data, kept in <save_dir>/teacher_views/ for the next run with the same
teacher, images and views) and handed out with the images."""

import contextlib
import hashlib
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from base.base_data_loader import ArrayDataset, held_out_count
from checkpoint.schema import data_mismatch
from data_loader.views import FixedViews
from model.tta import tta_logits
from trainer.hooks import StepHook
from utils import distributed
from utils.errors import ConfigError
from utils.paths import save_atomic


class Distiller(StepHook):
    """The teacher's logits for each batch as it comes (`batch`: before resizing and mixing) and the
    distillation loss that replaces the criterion's (`loss`)."""

    def __init__(self, teacher, alpha, temperature, tta="none", input_map=None, autocast=contextlib.nullcontext):
        self.teacher = teacher.eval().requires_grad_(False)
        self.autocast, self.logits = autocast, None
        self.alpha, self.temperature, self.tta = alpha, temperature, tta
        self.input_map = input_map  # (scale, offset): the student's normalised inputs -> the teacher's
        self.views = False  # True: the logits come with each batch (fix_views)

    @classmethod
    def from_config(cls, cfg, trained, data_loader, device, precision, data_args=None):
        """The run's Distiller for `trained` (load_teacher's network), checked against the data;
        data_args: the run's data_loader.args, to say when the teacher may have seen its validation images."""
        path = cfg["teacher"]
        problem = data_mismatch(trained.classes, trained.image_size, data_loader.classes, data_loader.image_size)
        if problem:
            raise ConfigError(f"trainer.distill.teacher: {path} was {problem}")
        pool = len(data_loader.dataset) + len(data_loader.valid_dataset or ())  # the images split, when a fraction is
        seen = seen_validation(trained.config.config.get("data_loader", {}).get("args", {}), data_args or {}, pool)
        if seen:
            logging.getLogger("trainer").warning(f"warning: trainer.distill.teacher: {path} {seen}")
        teacher = trained.model.to(device)
        if precision.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
        input_map = _input_map(trained.stats, data_loader.stats)
        return cls(teacher, cfg["alpha"], cfg["temperature"], cfg["tta"], input_map, precision.autocast)

    def fix_views(self, data_loader, k, cache_dir, teacher_sha256, device):
        """trainer.distill.views: make `data_loader`'s training images k fixed views each, with the
        teacher's logits of every view stored beside them (from the cache when it has them)."""
        dataset = data_loader.dataset
        if not isinstance(dataset, ArrayDataset):
            raise ConfigError(
                f"trainer.distill.views: {type(data_loader).__name__}'s dataset is not an ArrayDataset "
                "(images in memory), which fixed views need; set views to 0"
            )
        if dataset.flip_first is not None:
            raise ConfigError(
                "trainer.distill.views: the fixed views are the augmentations' own; data_loader.args.flip "
                '"alternate" would mirror them after the teacher saw them: use "random" with views'
            )
        views = FixedViews(k)
        key = _views_key(dataset, views, teacher_sha256, self.tta, self.input_map)
        cache = Path(cache_dir) / "teacher_views" / f"{key}.pt"
        stored = _read_cache(cache, (len(dataset), k))
        if any(distributed.all_gather_objects(stored is None)):  # every process computes, or none: a collective
            stored = self.view_logits(
                dataset, views, data_loader.collate_fn, data_loader.eval_batch_size, device, len(data_loader.classes)
            )
            if distributed.is_main():
                save_atomic({"logits": stored}, cache)
        else:
            logging.getLogger("trainer").info(f"Teacher logits of {k} views per image: read from {cache}")
        dataset.views = FixedViews(k, stored)
        self.views = True

    def view_logits(self, dataset, views, collate, batch_size, device, classes):
        """(N, k, classes) float32: the teacher's logits of every view of every image. Under torchrun each
        process computes its own share of the images, and the shares are summed into the whole."""
        n, logger, start_time = len(dataset), logging.getLogger("trainer"), time.perf_counter()
        rank, world = distributed.rank(), distributed.world_size()
        first, end = n * rank // world, n * (rank + 1) // world  # this process's images
        logger.info(
            f"Teacher logits of {views.k} fixed views of each of {n:,} images: {views.k} teacher passes over the data"
            + (f", {world} processes sharing them" if world > 1 else "")
        )
        out = torch.zeros(n, views.k, classes, device=device)  # zeros where another process's share goes
        for v in range(views.k):
            for start in range(first, end, batch_size):
                batch = [(views.image(dataset, i, v), 0) for i in range(start, min(end, start + batch_size))]
                out[start : start + len(batch), v] = self.targets(collate(batch)[0].to(device))
            spent = (time.perf_counter() - start_time) / 60
            left = spent / (v + 1) * (views.k - v - 1)
            logger.info(f"  view {v + 1}/{views.k}: {spent:.1f} min, about {left:.1f} left")
        return distributed.all_reduce_sum(out).cpu()

    def stored_targets(self, values):
        self.logits = values.float()

    @torch.no_grad()
    def targets(self, images):
        """The teacher's logits (float32) for a batch normalised as the student's."""
        if self.input_map is not None:
            scale, offset = (t.to(images.device) for t in self.input_map)
            images = images * scale + offset
        with self.autocast():
            return tta_logits(self.teacher, images, self.tta).float()

    def batch(self, images, target):
        if not self.views:
            self.logits = self.targets(images)
        return images, target

    def loss(self, criterion, output, target):
        return self.mixed_loss(criterion, output, target, self.logits)

    def mixed_loss(self, criterion, output, target, teacher_logits):
        t = self.temperature
        student = F.log_softmax(output.float() / t, dim=1)
        teacher = F.log_softmax(teacher_logits / t, dim=1)
        kd = F.kl_div(student, teacher, reduction="batchmean", log_target=True) * (t * t)
        return (1 - self.alpha) * criterion(output, target) + self.alpha * kd


def seen_validation(teacher_args, run_args, pool=None):
    """What the configs say of the teacher having trained on this run's validation images, or None
    when it cannot have: the run validates on a test split (validation_split 0), or holds out the same
    count with the same split_seed as the teacher did. pool: the count of images split, which turns a
    fraction into the count it holds out (0.1 of 50,000 is 5,000)."""
    held, seed = _held_count(pool, run_args.get("validation_split", 0)), run_args.get("split_seed", 0)
    if not held:
        return None
    teacher_held = _held_count(pool, teacher_args.get("validation_split", 0))
    teacher_seed = teacher_args.get("split_seed", 0)
    if not teacher_held:
        return (
            "was trained on all the training images (its validation_split 0), this run's validation images "
            "among them: the validation figures of this run read high"
        )
    if (teacher_held, teacher_seed) != (held, seed):
        return (
            f"held out validation_split {teacher_held} (split_seed {teacher_seed}), this run {held} (split_seed "
            f"{seed}): the teacher trained on some of this run's validation images, whose figures read high"
        )
    return None


def _input_map(teacher_stats, student_stats):
    """Per-channel (scale, offset) taking inputs normalised with the student's mean/std to the
    teacher's normalisation; None when the two agree (the same training images)."""
    t_mean, t_std, s_mean, s_std = (
        torch.tensor(stats[key], dtype=torch.float32)
        for stats in (teacher_stats, student_stats)
        for key in ("mean", "std")
    )
    if torch.allclose(t_mean, s_mean, atol=1e-5) and torch.allclose(t_std, s_std, atol=1e-5):
        return None
    scale, offset = s_std / t_std, (s_mean - t_mean) / t_std
    return scale.view(1, -1, 1, 1), offset.view(1, -1, 1, 1)


def _views_key(dataset, views, teacher_sha256, tta, input_map):
    """What the stored logits depend on: the teacher file, its TTA and input map, the images and
    labels, k, and the views themselves (the first images' pixels in every view: any change of the
    augmentations changes them)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{teacher_sha256}|{tta}|{views.k}|{dataset.images.shape}".encode())
    if input_map is not None:
        h.update(torch.cat([t.flatten() for t in input_map]).numpy().tobytes())
    h.update(dataset.images.tobytes())
    h.update(dataset.labels.astype("int64").tobytes())
    for i in range(min(8, len(dataset))):
        for v in range(views.k):
            h.update(views.image(dataset, i, v).numpy().tobytes())
    return h.hexdigest()


def _read_cache(path, shape):
    """The stored logits at `path`, or None when there are none (or not of this shape: computed anew)."""
    try:
        logits = torch.load(path, map_location="cpu", weights_only=True)["logits"]
    except (OSError, RuntimeError, KeyError, TypeError, EOFError):
        return None
    return logits if tuple(logits.shape[:2]) == shape and logits.dtype == torch.float32 else None


def _held_count(pool, validation_split):
    """held_out_count when the pool is known; a fraction stays as written when it is not."""
    return held_out_count(pool, validation_split) if pool else validation_split
