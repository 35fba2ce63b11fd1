"""The checks of a run, before its folder exists: a run that fails one writes nothing. train.py
calls them as two named steps around reading the data: `check_config` (what the config alone
decides, in seconds) and `check_run` (the data, the network and the constraints together); the
probe step (trainer/probe.py) then tries one real step on a copy."""

from pathlib import Path

import torch

from base.base_model import evaluating, num_params
from checkpoint.resume import require_full
from checkpoint.schema import check_network_fits, saved_entries
from logger import get_logger
from model.spec import describe, format_checks
from model.trace import receptive_field, trace
from utils import ConfigError, SpecError, distributed


def check_config(config):
    """What the config (and a resumed checkpoint) decide alone, before the network or the data are
    built: the loss and lr, the teacher file, the batch, the kind of resume file and whether its
    network fits. Returns the data loader's batch under trainer.accumulate ({} to keep the config's)."""
    logger = get_logger("train")
    check_loss_and_lr(config, logger)
    for key, path in (("trainer.distill.teacher", config.trainer.distill), ("trainer.init", config.trainer.init)):
        check_file(key, getattr(path, "teacher", path))
    batch_size = config["data_loader"]["args"].get("batch_size")
    check_batch_size(batch_size, distributed.world_size())
    loader_batch = micro_batch(config.trainer.accumulate, batch_size)
    if not config.resume:
        note_short_schedule(config, logger)
    else:  # the kind of file first, then whether its weights fit
        require_full(config.resume_checkpoint, config.resume)
        check_network_fits(config, saved_entries(config.resume_checkpoint), config.resume)
    return loader_batch


def check_run(config, model, data_loader, allow_spec_violation=False):
    """The data, the network and the constraints together, once the data is read: the batch fits
    the data, the network gives one logit per class and the C1..C4 rules hold. Returns the
    network's summary (the report shows it)."""
    check_batch_size(config["data_loader"]["args"].get("batch_size"), distributed.world_size(), data_loader)
    check_batch_memory(model, data_loader)  # before anything runs the network at the data's size
    check_resize(config["trainer"].get("progressive_resize"), data_loader.image_size, get_logger("train"))
    check_logits(model, data_loader)
    return check_spec(config, model, data_loader, allow_spec_violation, get_logger("train"))


def check_file(key, path):
    """A file the run reads after the data (trainer.init, the teacher) exists: one line now, not in a minute."""
    if path is not None and not Path(path).expanduser().is_file():
        raise ConfigError(f"{key}: {path}: no such file")


MAX_BATCH_BYTES = 8 * 2**30  # a training batch's activations, on this project's 24 GB, 2-core reference machine
PROBE_SIDE = 32


def activation_bytes(model, image_size, batch):
    """About what one training step of `batch` images of `image_size` keeps for the backward pass:
    the outputs of every layer, measured on one small picture and scaled by the area (the network is
    fully convolutional), in float32, twice (the activations and their gradients). None when the
    network does not run on the small picture (check_logits then says why, at the data's size)."""
    outputs, hooks = [], []
    for module in model.modules():
        if not list(module.children()):
            hooks.append(
                module.register_forward_hook(lambda m, i, o: outputs.append(o.numel() if torch.is_tensor(o) else 0))
            )
    try:
        with evaluating(model):
            model(torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE))
    except RuntimeError:
        return None
    finally:
        for hook in hooks:
            hook.remove()
    per_pixel = sum(outputs) / PROBE_SIDE**2
    return per_pixel * image_size[0] * image_size[1] * batch * 4 * 2


def check_batch_memory(model, data_loader, limit=MAX_BATCH_BYTES):
    """A batch whose activations would not fit (large pictures, a large batch) is one line, from an
    estimate on one small picture, before the network runs at the data's size."""
    batch = data_loader.batch_sampler.batch_size
    need = activation_bytes(model, data_loader.image_size, batch)
    if need is not None and need > limit:
        h, w = data_loader.image_size
        raise ConfigError(
            f"data_loader.args.batch_size: a batch of {batch} pictures of {w}x{h} needs about {need / 2**30:,.0f} GB "
            f"of activations to train {type(model).__name__}, more than {limit / 2**30:.0f} GB; use smaller "
            "pictures (this project trains on small ones, CIFAR-10's are 32x32) or a smaller batch"
        )


def check_resize(resize, image_size, logger):
    """trainer.progressive_resize must start below the data's image size to do anything: above it is
    one line; at it (a recipe for larger pictures on small ones), a note."""
    side = min(image_size)
    if not resize or resize["min_size"] < side:
        return
    if resize["min_size"] > side:
        raise ConfigError(
            f"trainer.progressive_resize.min_size: {resize['min_size']} is larger than the images' {side} px; give "
            f"a size below {side}, or null to train at full size"
        )
    logger.warning(f"note: trainer.progressive_resize starts at the images' own {side} px, so it changes nothing")


def micro_batch(k, batch_size):
    """The loader's batch size under trainer.accumulate `k` ({} without it): batch_size / k, so that
    the global batch of one optimizer step stays batch_size (None: a loader without one)."""
    if k == 1 or batch_size is None:
        return {}
    if batch_size % k:
        raise ConfigError(
            f"trainer.accumulate: {k} does not divide data_loader.args.batch_size {batch_size} (each optimizer step "
            "sums the gradients of batch_size / accumulate images k times)"
        )
    return {"batch_size": batch_size // k}


def check_batch_size(batch_size, world, data_loader=None):
    """What the schema cannot know about data_loader.args.batch_size (an integer >= 1 there): that it
    splits over the run's processes, and, once the data is read, that it holds one batch per epoch."""
    if batch_size is None:  # a loader without a batch_size argument
        return
    if world > 1 and batch_size % world:
        raise ConfigError(
            f"data_loader.args.batch_size: the global batch {batch_size} does not split evenly "
            f"over {world} processes; use a multiple of {world}"
        )
    if data_loader is not None and data_loader.batch_sampler.batch_size > len(data_loader.dataset):
        raise ConfigError(
            f"data_loader.args.batch_size: {batch_size} is more than the "
            f"{len(data_loader.dataset)} training images: not one batch per epoch"
        )


def note_short_schedule(config, logger):
    """One line when --epochs asks for far fewer epochs than the config's recipe was made for: its
    warm-up, learning-rate peak and resizing are sized for its own length."""
    epochs, recipe = config["trainer"]["epochs"], getattr(config, "recipe_epochs", None)
    if isinstance(recipe, int) and epochs * 4 <= recipe and config["trainer"]["limit_batches"] is None:
        logger.warning(
            f"note: {epochs} epoch{'s' if epochs != 1 else ''} of a recipe made for {recipe}: its schedule "
            "(warm-up, learning-rate peak, "
            "image resizing) is sized for that length, so expect far less than its accuracy"
        )


def check_loss_and_lr(config, logger):
    """Values the classes accept but that cannot be meant: a label smoothing outside [0, 1] (an
    anti-smoothed or inverted target) is one line; a learning rate of 0 trains nothing, said in a note."""
    smoothing = config["loss"]["args"].get("label_smoothing")
    if smoothing is not None and not 0 <= smoothing <= 1:
        raise ConfigError(f"loss.args.label_smoothing: expected a fraction from 0 to 1, got {smoothing}")
    lr = config["optimizer"]["args"].get("lr")
    if lr is not None and lr == 0:
        logger.warning("note: optimizer.args.lr is 0: the weights will not move (the schedule scales the lr, from 0)")
    check_momentum(config, logger)


CYCLING_MOMENTUM = ("OneCycleLR", "CyclicLR")  # schedulers that set the momentum themselves (cycle_momentum)


def check_momentum(config, logger):
    """optimizer.args.momentum outside [0, 1) is one line (1 or more never forgets a gradient). Under
    a scheduler that cycles the momentum (cycle_momentum, on by default) the optimizer's own value is
    not used: a note says which momentum the run really has."""
    momentum = config["optimizer"]["args"].get("momentum")
    if momentum is None:
        return
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ConfigError(f"optimizer.args.momentum: expected a number from 0 to below 1, got {momentum!r}")
    schedule = config["lr_scheduler"] or {}
    args = schedule.get("args", {})
    if schedule.get("type") in CYCLING_MOMENTUM and args.get("cycle_momentum", True):
        low, high = (
            args.get("base_momentum", 0.85 if schedule["type"] == "OneCycleLR" else 0.8),
            args.get("max_momentum", 0.95 if schedule["type"] == "OneCycleLR" else 0.9),
        )
        logger.info(
            f"note: {schedule['type']} cycles the momentum between {low} and {high} (lr_scheduler.args.base_momentum "
            f"and max_momentum); optimizer.args.momentum {momentum} is not used (cycle_momentum false keeps it)"
        )


def check_logits(model, data_loader):
    """The network returns one tensor of logits, (batch, one per class of the data), for a batch of
    two (a batch of one is refused by BatchNorm in training mode; the probe step runs it)."""
    with evaluating(model):
        out = model(torch.zeros(2, 3, *data_loader.image_size))
    if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != 2:
        what = f"a tensor of shape {tuple(out.shape)}" if torch.is_tensor(out) else f"a {type(out).__name__}"
        raise ConfigError(
            f"arch.type: {type(model).__name__}.forward returns {what}; the trainer expects one tensor of "
            "logits, (batch, classes)"
        )
    outputs = out.shape[-1]
    classes = list(data_loader.classes)
    if len(classes) != outputs:  # fewer: a class folder is missing, and its outputs would never be trained
        shown = ", ".join(classes) if len(classes) <= 12 else ", ".join(classes[:12]) + ", ..."
        raise ConfigError(
            f"arch.args.num_classes: the network has {outputs} outputs, but the data holds "
            f"{len(classes)} classes ({shown}); set it to {len(classes)} or add the missing class folders"
        )


def check_spec(config, model, data_loader, allow_spec_violation, logger):
    """The C1C2C3C4 rules (`constraints`) judged on what the network computes at the data's image size:
    the layer summary and tables once per run (verbosity 2), one line always, and a SpecError for a
    broken rule unless allowed. Returns the summary (the report shows it)."""
    constraints = config["constraints"]
    input_size = (1, 3, *data_loader.image_size)  # the data's size, not an assumed 32x32
    summary, failed = describe(
        model, constraints, input_size=input_size, augmentations=config["data_loader"]["args"].get("augmentations")
    )
    if not config.resume:
        logger.debug(summary)
    verdict = (
        "no constraints section"
        if not constraints
        else "every rule passes"
        if not failed
        else "breaks " + ", ".join(c.rule for c in failed)
    )
    logger.info(
        f"Network: {type(model).__name__}, {num_params(model):,} parameters, receptive field "
        f"{receptive_field(trace(model, input_size))} at {input_size[3]}x{input_size[2]}; constraints: {verdict}"
    )
    if failed:
        if constraints["enforce"] and not allow_spec_violation:
            raise SpecError(
                "the network breaks the spec (--allow_spec_violation, or constraints.enforce false, trains it "
                "anyway):\n" + format_checks(failed)
            )
        logger.warning("the network breaks the spec; training anyway as asked")
    return summary


def place_network(model, sync_bn, device):
    """The checked network made ready to train: SyncBatchNorm if trainer.sync_bn asks (CUDA only), on `device`."""
    if sync_bn and distributed.is_distributed():
        if device.type != "cuda":
            raise ConfigError(
                "trainer.sync_bn: SyncBatchNorm works on CUDA only; on the CPU leave it false "
                "(BatchNorm statistics are then averaged over the processes after every epoch)"
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(device)
