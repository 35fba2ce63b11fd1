"""The per-step options of the training loop, each one small named piece (a `StepHook`): the
Trainer lists the run's hooks in order and trainer.loops.train_one_epoch calls them on every batch.
The project's hooks: trainer.distill.Distiller, trainer.batch_tricks.BatchTricks (progressive
resizing, MixUp / CutMix), EmaUpdate and ScheduleStep below. A new option is one more subclass,
its config section, and one line in Trainer.step_hooks (docs/guide.md shows one)."""


class StepHook:
    """One per-step option. Every method has a default that changes nothing."""

    def start_epoch(self, epoch):
        """Called before each epoch; returns entries for the epoch log (e.g. the image size)."""
        return {}

    def stored_targets(self, values):
        """Values the dataset handed out with this batch's images (the teacher's logits of fixed
        views: trainer.distill.views), before batch(); only for loaders that give them."""

    def batch(self, images, target):
        """(images, target for the loss) of a batch before the forward pass; the target may become
        soft (mixing). The metrics keep the labels as loaded."""
        return images, target

    def loss(self, criterion, output, target):
        """A loss that replaces criterion(output, target), or None to keep it."""
        return None

    def after_step(self, model):
        """Called after every optimizer step (the DDP wrapper under DDP)."""


class EmaUpdate(StepHook):
    """trainer.ema: the average (torch.optim.swa_utils.AveragedModel) takes in the weights after
    every step."""

    def __init__(self, ema):
        self.ema = ema

    def after_step(self, model):
        self.ema.update_parameters(getattr(model, "module", model))  # the plain model under DDP


class ScheduleStep(StepHook):
    """A per-batch learning-rate schedule (OneCycleLR, ...): one scheduler step after every optimizer step."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def after_step(self, model):
        self.scheduler.step()
