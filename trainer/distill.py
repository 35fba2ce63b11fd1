"""Knowledge distillation (Hinton et al., 2015) from a trained teacher (trainer.distill): the loss is
(1 - alpha) x the criterion against the labels + alpha x T^2 x KL(teacher || student), both softmaxes
at temperature T. The teacher sees the same augmented images as the student (a consistent view,
Beyer et al., 2022), at full size while progressive resizing shrinks the student's; it is never
trained, and its forward pass is the price: about a third of a training step more per batch."""

import contextlib

import torch
import torch.nn.functional as F

from checkpoint.schema import data_mismatch
from model.tta import tta_logits
from trainer.hooks import StepHook
from utils.errors import ConfigError


class Distiller(StepHook):
    """The teacher's logits for each batch as it comes (`batch`: before resizing and mixing) and the
    distillation loss that replaces the criterion's (`loss`)."""

    def __init__(self, teacher, alpha, temperature, tta="none", input_map=None, autocast=contextlib.nullcontext):
        self.teacher = teacher.eval().requires_grad_(False)
        self.autocast, self.logits = autocast, None
        self.alpha, self.temperature, self.tta = alpha, temperature, tta
        self.input_map = input_map  # (scale, offset): the student's normalised inputs -> the teacher's

    @classmethod
    def from_config(cls, cfg, trained, data_loader, device, precision):
        """The run's Distiller for `trained` (load_teacher's network), checked against the data."""
        path = cfg["teacher"]
        problem = data_mismatch(trained.classes, trained.image_size, data_loader.classes, data_loader.image_size)
        if problem:
            raise ConfigError(f"trainer.distill.teacher: {path} was {problem}")
        teacher = trained.model.to(device)
        if precision.channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
        input_map = _input_map(trained.stats, data_loader.stats)
        return cls(teacher, cfg["alpha"], cfg["temperature"], cfg["tta"], input_map, precision.autocast)

    @torch.no_grad()
    def targets(self, images):
        """The teacher's logits (float32) for a batch normalised as the student's."""
        if self.input_map is not None:
            scale, offset = (t.to(images.device) for t in self.input_map)
            images = images * scale + offset
        with self.autocast():
            return tta_logits(self.teacher, images, self.tta).float()

    def batch(self, images, target):
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
