"""Training as train.py runs it, as a library (the tuner and the benchmarks use it too). It sits
above trainer/ and deploy/ and puts them together (the data, the network, a distillation teacher
loaded by deploy/, the Trainer, the report with its Grad-CAM pictures):
`build` checks everything and builds the Trainer before any file is written, `train` makes the run
folder, trains and writes the report, `main` does both, alone or as one process of torchrun's group."""

import shlex
from typing import NamedTuple

import torch

import model.metric as module_metric
from base.base_data_loader import close_workers
from base.base_model import num_params
from deploy.cam import mistake_cams_for
from deploy.loading import load_network
from logger import attach_run_log, get_logger, setup_logging
from logger.run_report import write_run_report
from model.blocks import PatchWhitening
from model.spec import describe, format_checks
from model.trace import receptive_field, trace
from trainer.loops import optimizer_steps
from trainer.optim import build_optimizer
from trainer.probe import probe_step
from trainer.schedulers import build_lr_scheduler, dry_run
from trainer.swa import check_swa
from trainer.trainer import Trainer
from utils import ConfigError, SpecError, distributed, resolve_device, seed_everything
from utils.checkpoint import (
    check_network_fits,
    data_mismatch,
    load_checkpoint,
    load_model_state,
    saved_entries,
)
from utils.cli import Terminated, exit_status, ignore_further_interrupts
from utils.config_schema import refuse_combined
from utils.errors import ReportError
from utils.paths import file_sha256
from utils.provenance import record_provenance
from utils.resume_policy import require_full


def load_teacher(trainer_cfg):
    """(the teacher network of trainer.distill, in eval mode on the CPU, its file's sha256), or None
    when distillation is off. One line for a missing or unreadable file, or a clash of options."""
    cfg = trainer_cfg.get("distill")
    if not cfg:
        return None
    refuse_combined(
        trainer_cfg,
        "distill",
        ("mix", "selective_backprop"),
        "it changes the batch or its targets after the teacher has seen it",
    )
    trained = load_network(cfg["teacher"], require=("data_stats", "classes"))
    return trained, file_sha256(cfg["teacher"])


class Run(NamedTuple):
    """What `build` made and `train` runs: the Trainer, its loaders and the network's summary."""

    trainer: Trainer
    data_loader: object
    valid_data_loader: object
    summary: str


def micro_batch(config):
    """The loader's batch size under trainer.accumulate ({} without it): batch_size / accumulate, so
    that the global batch of one optimizer step stays batch_size."""
    k, batch_size = config["trainer"]["accumulate"], config["data_loader"]["args"].get("batch_size")
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
            "image resizing) is sized for that length, so expect far less than its accuracy (the README's "
            "smoke run shows what a short run reaches)"
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


def check_logits(model, data_loader):
    """The network returns one tensor of logits, (batch, one per class of the data), for a batch of
    two (a batch of one is refused by BatchNorm in training mode; the probe step runs it)."""
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, *data_loader.image_size))
    model.train()
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


def fit_whitening(model, data_loader, images=5000):
    """Set the network's whitening layer (if it has one) from the first `images` training pictures,
    normalised as the loader normalises batches; a fresh run does this before its first step."""
    fit, pictures = getattr(model, "fit_whitening", None), getattr(data_loader.dataset, "images", None)
    normalize = getattr(data_loader.collate_fn, "normalize", None)
    if fit is None or not any(isinstance(m, PatchWhitening) for m in model.modules()):
        return
    if pictures is None or normalize is None:
        raise ConfigError(
            "arch.args.whiten: the whitening layer is fitted on the loader's pictures (dataset.images) "
            "and normalisation (collate_fn.normalize), which this data loader does not have"
        )
    fit(normalize(torch.from_numpy(pictures[:images]).permute(0, 3, 1, 2)))


def init_weights(model, config, logger):
    """A new run with trainer.init starts from that file's weights (a full checkpoint or an export of
    the same network); returns the classes it was trained on (None without trainer.init or on resume,
    which loads its own weights). A missing file or one of another network is one line."""
    path = config["trainer"].get("init")
    if not path or config.resume:
        return None
    ckpt = load_checkpoint(path)
    load_model_state(model, ckpt, path)
    logger.info(
        f"Weights: start from {path} (sha256 {file_sha256(path)[:12]}..., epoch {saved_entries(ckpt).epoch} of its run)"
    )
    return saved_entries(ckpt).classes


def check_init_classes(path, classes, data_loader):
    problem = data_mismatch(classes, None, data_loader.classes, None)
    if problem:
        raise ConfigError(f"trainer.init: {path} was {problem}")


def main(config, allow_spec_violation=False, epoch_callbacks=(), resume_hint=True):
    """Train as `config` says; returns the epoch logs. epoch_callbacks: f(epoch, log) after each epoch;
    resume_hint: on Ctrl-C or SIGTERM print how to resume and exit (False: the KeyboardInterrupt goes
    on to the caller, e.g. the tuner, which has its own way to go on).
    Under torchrun: one DDP process per GPU (or CPU worker); rank 0 logs and writes every file."""
    device = resolve_device(config["device"])
    if not distributed.launched_by_torchrun():
        return _train(config, device, allow_spec_violation, epoch_callbacks, resume_hint)
    return distributed.run_group(
        config,
        device,
        lambda dev: _train(config, dev, allow_spec_violation, epoch_callbacks, resume_hint),
    )


def _train(config, device, allow_spec_violation, epoch_callbacks, resume_hint=True):
    setup_logging(None, config["trainer"]["verbosity"] if distributed.is_main() else 0)
    seed_everything(config["seed"])
    run = build(config, device, allow_spec_violation, epoch_callbacks)
    return train(config, run, resume_hint)


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


def place_network(model, config, device, data_loader):
    """The checked network made ready to train: SyncBatchNorm if asked, its whitening layer fitted to
    the data (unless weights come from a checkpoint), on `device`."""
    if config["trainer"]["sync_bn"] and distributed.is_distributed():
        if device.type != "cuda":
            raise ConfigError(
                "trainer.sync_bn: SyncBatchNorm works on CUDA only; on the CPU leave it false "
                "(BatchNorm statistics are then averaged over the processes after every epoch)"
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not config.resume and not config["trainer"].get("init"):  # those load the fitted layer with the weights
        fit_whitening(model, data_loader)
    return model.to(device)


def build(config, device, allow_spec_violation=False, epoch_callbacks=()):
    """Everything that can be checked is checked (config, data, network, spec, checkpoint) before the
    run folder is made: a run that fails its checks writes nothing. Returns the Run to `train`."""
    logger = get_logger("train")
    if config.resume:  # before the data and the network: the kind of file first, then whether its weights fit
        require_full(config.resume_checkpoint, config.resume)
        check_network_fits(config, saved_entries(config.resume_checkpoint), config.resume)
    model = config.init_obj("arch")  # before the data: the network's own checks of its args cost nothing
    teacher = load_teacher(config["trainer"])  # before the data too: a missing teacher file is one line at once
    check_swa(config["trainer"])
    init_classes = init_weights(model, config, logger)  # and a missing or unfitting trainer.init file
    check_loss_and_lr(config, logger)
    if not config.resume:
        note_short_schedule(config, logger)
    check_batch_size(config["data_loader"]["args"].get("batch_size"), distributed.world_size())
    data_loader = config.init_obj("data_loader", **micro_batch(config))
    valid_data_loader = data_loader.split_validation()
    check_batch_size(config["data_loader"]["args"].get("batch_size"), distributed.world_size(), data_loader)
    check_logits(model, data_loader)
    check_init_classes(config["trainer"].get("init"), init_classes, data_loader)
    summary = check_spec(config, model, data_loader, allow_spec_violation, logger)
    model = place_network(model, config, device, data_loader)
    steps = optimizer_steps(data_loader, config["trainer"])  # per epoch: one per trainer.accumulate batches
    dry_run(config, steps_per_epoch=steps)  # values a scheduler refuses only when it steps
    optimizer = build_optimizer(config, model)
    criterion, metrics = config.init_obj("loss"), module_metric.build_metrics(config["metrics"])
    # a value that fails only when used is one line, before the run folder exists
    probe_step(model, criterion, metrics, data_loader, device, make_optimizer=lambda net: build_optimizer(config, net))
    trainer = Trainer(
        model,
        criterion,
        metrics,
        optimizer,
        config=config,
        device=device,
        data_loader=data_loader,
        valid_data_loader=valid_data_loader,
        lr_scheduler=build_lr_scheduler(config, optimizer, steps_per_epoch=steps),
        epoch_callbacks=epoch_callbacks,
        teacher=teacher,
    )
    if config.resume:
        trainer.resume(config.resume_checkpoint, config.resume)
    return Run(trainer, data_loader, valid_data_loader, summary)


def train(config, run, resume_hint=True):
    """Make the run folder (a new one of its own, or the resumed run's, locked), train, write the
    report, with the Grad-CAM pictures of the most confident mistakes."""
    logger, main_rank = get_logger("train"), distributed.is_main()
    data_loader, valid_data_loader = run.data_loader, run.valid_data_loader
    if run.trainer.start_epoch > run.trainer.epochs:  # a finished checkpoint: no run folder, no report
        logger.info(
            f"Nothing to train: {config.resume} has finished all {run.trainer.epochs} epochs "
            "(test.py, report.py and export.py take it as it is)"
        )
        return run.trainer.history
    if main_rank:
        config.make_run_dir()
        attach_run_log(config.run_dir)
        record_provenance(config.run_dir, run.trainer.device)
    logger.info(
        f"Data: {len(data_loader.dataset)} training images, "
        f"{len(valid_data_loader.dataset) if valid_data_loader else 0} {data_loader.valid_name} images; "
        f"mean {data_loader.stats['mean']} std {data_loader.stats['std']}; device {run.trainer.device}; "
        f"run folder {config.run_dir}"
    )
    try:
        run.trainer.train()
    except KeyboardInterrupt as e:
        if not resume_hint:
            raise
        ignore_further_interrupts()  # a second Ctrl-C must not cut the hint (or the lock's release) short
        what = "stopped (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        logger.warning(
            f"{what}: the last finished epoch is saved; resume with  python train.py --resume "
            f"{shlex.quote(str(config.run_dir / 'last.pth'))}"
        )
        raise SystemExit(exit_status(e)) from None
    finally:
        if main_rank:
            config.release_run_dir()
    try:
        if config["trainer"]["report"] and main_rank:
            _report(config, run, logger)
    finally:
        for loader in (data_loader, valid_data_loader):
            close_workers(loader)
    return run.trainer.history


def _report(config, run, logger):
    """The end-of-run report. Training has finished by now: a stop or a full disk while the report is
    written says so, and how to write the report later (report.py), instead of hiding it."""
    later = f"python report.py --resume {shlex.quote(str(config.run_dir / 'last.pth'))}"
    try:
        write_run_report(
            config.run_dir,
            config.config,
            run.trainer.history,
            run.trainer.last_val_outputs,
            run.data_loader,
            run.valid_data_loader,
            run.summary,
            mistake_cams=mistake_cams_for(run.trainer.eval_model, run.data_loader.stats),
            tta=getattr(run.trainer, "tta_results", None),
        )
    except KeyboardInterrupt as e:
        ignore_further_interrupts()
        what = "stopped (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        logger.warning(
            f"{what} while writing the report: training has finished and its checkpoints are saved in "
            f"{config.run_dir}; write the report with  {later}"
        )
        raise SystemExit(exit_status(e)) from None
    except OSError as e:
        raise ReportError(
            f"{e.filename or config.run_dir}: cannot write the report ({e.strerror or e}); training has finished "
            f"and its checkpoints are saved: once there is room, write the report with  {later}"
        ) from None
