"""Train a network as the config says:  python train.py -c config.json   (or -c config.yaml)
Continue a run:                          python train.py --resume saved/<name>/<run>/last.pth
The composition root: `build` makes every part of a run from the config, `main` trains it."""

import startup  # noqa: F401  (first: a Ctrl-C while the modules below load is one line, not a traceback)

# isort: split
import functools
import shutil
import sys
import tempfile

import model.metric as module_metric
from checkpoint.resume import start_weights
from checkpoint.saver import RunFiles
from config.overrides import FAST_DEV_RUN, FAST_DEV_RUN_DONE, fast_read, train_argparser
from config.parser import ConfigParser
from config.schedules import build_lr_scheduler
from deploy.cam import mistake_cams_for
from logger import get_logger, setup_logging
from trainer import Trainer, preflight
from trainer.loops import optimizer_steps
from trainer.probe import probe_step
from utils import distributed, resolve_device, seed_everything
from utils.cli import on_interrupt_say, run_main


def build(config, device, files, allow_spec_violation=False, epoch_callbacks=()):
    """Loaders, network, loss, metrics, optimizer, scheduler, Trainer: each checked before any file is written."""
    loader_batch = preflight.check_config(config)  # before the data is read: the batch under trainer.accumulate
    model = config.init_obj("arch")  # before the data: the network's own checks of its args cost nothing
    data_loader = config.init_obj("data_loader", **loader_batch)
    valid_data_loader = data_loader.split_validation()
    if config.trainer.init and not config.resume:  # a new run from trained weights
        start_weights(model, config.trainer.init, data_loader.classes)
    steps = optimizer_steps(data_loader, config.trainer.accumulate)  # per epoch
    summary = preflight.check_run(config, model, data_loader, allow_spec_violation)
    model = preflight.place_network(model, config.trainer.sync_bn, device)
    criterion, metrics = config.init_obj("loss"), module_metric.build_metrics(config["metrics"])
    optimizer = config.init_obj("optimizer", model.parameters())
    lr_scheduler = build_lr_scheduler(config, optimizer, steps_per_epoch=steps)  # stepped through once first
    probe_step(model, criterion, metrics, data_loader, device, functools.partial(config.init_obj, "optimizer"))
    trainer = Trainer(model, criterion, metrics, optimizer, config, files, device, data_loader, valid_data_loader,
                      lr_scheduler, epoch_callbacks)  # fmt: skip
    if config.resume:
        trainer.resume(config.resume_checkpoint, config.resume)
    return trainer, summary


def main(config, allow_spec_violation=False, epoch_callbacks=(), resume_hint=True, files=None):
    """Train as `config` says (torchrun: a process per device) and return the epoch logs. epoch_callbacks: f(epoch, log)
    after each; resume_hint: on Ctrl-C say how to resume and exit (False: the tuner goes on); files: RunFiles."""
    device, files = resolve_device(config.device), files or RunFiles.of(config)
    run = functools.partial(_run, config, files=files, allow_spec_violation=allow_spec_violation,
                            epoch_callbacks=epoch_callbacks)  # fmt: skip
    with on_interrupt_say(get_logger("train").warning, files.resume_hint, enabled=resume_hint):  # from any step
        return distributed.run_group(config, files, device, run) if distributed.launched_by_torchrun() else run(device)


def _run(config, device, files, allow_spec_violation, epoch_callbacks):
    setup_logging(None, config.trainer.verbosity if distributed.is_main() else 0)
    seed_everything(config.seed)
    trainer, summary = build(config, device, files, allow_spec_violation, epoch_callbacks)
    try:
        history = trainer.train()
        if config.trainer.report and distributed.is_main():
            trainer.report(summary, mistake_cams_for(trainer.eval_model, trainer.data_loader.stats))
    finally:
        trainer.close_loaders()
    return history


def fast_dev_run(args):
    """Every step of a run on two batches (config.overrides.FAST_DEV_RUN), in a temporary run folder."""
    folder = tempfile.mkdtemp(prefix="fast_dev_run-")
    args.set = [*FAST_DEV_RUN.items(), (("trainer", "save_dir"), folder), *(args.set or [])]
    try:
        config = ConfigParser.from_args(args, fast_read(ConfigParser.from_args(args)))  # a sample of the data
        history = main(config, args.allow_spec_violation)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(FAST_DEV_RUN_DONE.format(len(history)))
    return history


def cli(argv=None):
    parser = train_argparser()
    args = parser.parse_args(argv)
    if args.fast_dev_run and args.resume:
        parser.error("--fast_dev_run starts a new run; it cannot be combined with --resume")
    if args.fast_dev_run:
        return run_main(lambda: fast_dev_run(args), interrupted="interrupted: the temporary run folder is removed")
    return run_main(
        lambda: main(ConfigParser.from_args(args), args.allow_spec_violation),
        interrupted="interrupted before training started: nothing was written",
    )


if __name__ == "__main__":
    sys.exit(cli())
