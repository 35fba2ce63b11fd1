"""Train a network as the config says:  python train.py -c config.json
Continue a run:                          python train.py --resume saved/<name>/<run>/last.pth"""

import os
import re
import signal
import sys
from typing import NamedTuple

import torch

import model.metric as module_metric
from deploy.cam import mistake_cams_for
from logger import attach_run_log, get_logger, setup_logging
from logger.report import write_run_report
from model.spec import describe, format_checks
from parse_config import ConfigParser
from trainer import Trainer, build_lr_scheduler
from trainer.schedulers import dry_run
from utils import ConfigError, DistributedError, SpecError, distributed, resolve_device, seed_everything
from utils.cli import print_error, run_main
from utils.errors import DivergedError
from utils.overrides import add_override_flags, base_argparser

# how gloo and NCCL report a process that died or hung (they raise plain RuntimeErrors from backward)
LOST_PEER = re.compile(
    r"Connection (reset|closed) by peer|[Tt]imed? ?out|NCCL (error|communicator was aborted)|gloo/transport"
)


class Run(NamedTuple):
    """What `build` made and `train` runs: the Trainer, its loaders and the network's summary."""

    trainer: Trainer
    data_loader: object
    valid_data_loader: object
    summary: str


def check_outputs(model, data_loader):
    """The network needs an output per class of the data."""
    model.eval()
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, *data_loader.image_size)).shape[-1]
    model.train()
    if len(data_loader.classes) > outputs:
        raise ConfigError(
            f"arch.args.num_classes: the network has {outputs} outputs, but the data holds "
            f"{len(data_loader.classes)} classes"
        )


def main(config, allow_spec_violation=False, epoch_callbacks=()):
    """Train as `config` says; returns the epoch logs. epoch_callbacks: f(epoch, log) after each epoch.
    Under torchrun: one DDP process per GPU (or CPU worker); rank 0 logs and writes every file."""
    if not distributed.launched_by_torchrun():
        return _train(config, resolve_device(config["device"]), allow_spec_violation, epoch_callbacks)
    device = distributed.init_distributed(resolve_device(config["device"]), config["trainer"]["dist_timeout"])
    resume = "torchrun ... train.py --resume <run folder>/last.pth"
    try:
        config.run_dir = distributed.broadcast_object(config.run_dir)  # rank 0's timestamp names the folder
        resume = (
            f"torchrun --nproc_per_node={distributed.world_size()} train.py --resume {config.run_dir / 'last.pth'}"
            if distributed.world_size() == int(os.environ.get("LOCAL_WORLD_SIZE", -1))
            else f"torchrun <the same flags> train.py --resume {config.run_dir / 'last.pth'}"
        )

        def stopped(signum, frame):  # torchrun stops the group when one process fails
            raise DistributedError(
                f"rank {distributed.rank()}: stopped by torchrun (another process failed, or the job "
                f"was cancelled); the last finished epoch is saved: {resume}"
            )

        signal.signal(signal.SIGTERM, stopped)
        return _train(config, device, allow_spec_violation, epoch_callbacks)
    except DivergedError as e:
        # every rank stops at the same batch (the loss check is all-reduced): rank 0 says why, once,
        # and the others wait at a barrier until it has, so torchrun, which stops the group when the
        # first process exits, cannot cut its line off
        if distributed.is_main():
            print_error(e)
        torch.distributed.barrier()
        raise SystemExit(2) from None
    except RuntimeError as e:  # a rank died or stopped answering within dist_timeout
        if not (isinstance(e, torch.distributed.DistError) or LOST_PEER.search(str(e))):
            raise  # a bug, not a lost process: keep its traceback
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise DistributedError(
            f"rank {distributed.rank()}: lost contact with the other processes ({reason}); "
            f"the last finished epoch is saved: {resume}"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        distributed.cleanup()


def _train(config, device, allow_spec_violation, epoch_callbacks):
    setup_logging(None, config["trainer"]["verbosity"] if distributed.is_main() else 0)
    seed_everything(config["seed"])
    run = build(config, device, allow_spec_violation, epoch_callbacks)
    return train(config, run)


def build(config, device, allow_spec_violation=False, epoch_callbacks=()):
    """Everything that can be checked is checked (config, data, network, spec, checkpoint) before the
    run folder is made: a run that fails its checks writes nothing. Returns the Run to `train`."""
    logger = get_logger("train")
    model = config.init_obj("arch")  # before the data: the network's own checks of its args cost nothing
    data_loader = config.init_obj("data_loader")
    valid_data_loader = data_loader.split_validation()
    if data_loader.batch_sampler.batch_size > len(data_loader.dataset):
        raise ConfigError(
            f"data_loader.args.batch_size: {config['data_loader']['args']['batch_size']} is more than the "
            f"{len(data_loader.dataset)} training images: not one batch per epoch"
        )
    check_outputs(model, data_loader)
    constraints = config["constraints"]
    summary, failed = describe(model, constraints, augmentations=config["data_loader"]["args"].get("augmentations"))
    logger.info(summary)
    if failed:
        if constraints["enforce"] and not allow_spec_violation:
            raise SpecError("the network breaks the spec:\n" + format_checks(failed))
        logger.warning("the network breaks the spec; training anyway as asked")

    if config["trainer"]["sync_bn"] and distributed.is_distributed():
        if device.type != "cuda":
            raise ConfigError(
                "trainer.sync_bn: SyncBatchNorm works on CUDA only; on the CPU leave it false "
                "(BatchNorm statistics are then averaged over the processes after every epoch)"
            )
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    dry_run(config, steps_per_epoch=len(data_loader))  # values a scheduler refuses only when it steps
    optimizer = config.init_obj("optimizer", [p for p in model.parameters() if p.requires_grad])
    trainer = Trainer(
        model,
        config.init_obj("loss"),
        module_metric.build_metrics(config["metrics"]),
        optimizer,
        config=config,
        device=device,
        data_loader=data_loader,
        valid_data_loader=valid_data_loader,
        lr_scheduler=build_lr_scheduler(config, optimizer, steps_per_epoch=len(data_loader)),
        epoch_callbacks=epoch_callbacks,
    )
    if config.resume:
        trainer.resume(config.resume)
    return Run(trainer, data_loader, valid_data_loader, summary)


def train(config, run):
    """Make the run folder (a new one of its own, or the resumed run's, locked), train, write the report."""
    logger, main_rank = get_logger("train"), distributed.is_main()
    data_loader, valid_data_loader = run.data_loader, run.valid_data_loader
    if main_rank:
        config.make_run_dir()
        attach_run_log(config.run_dir)
    logger.info(
        f"Data: {len(data_loader.dataset)} training images, "
        f"{len(valid_data_loader.dataset) if valid_data_loader else 0} {data_loader.valid_name} images; "
        f"mean {data_loader.stats['mean']} std {data_loader.stats['std']}; device {run.trainer.device}; "
        f"run folder {config.run_dir}"
    )
    try:
        run.trainer.train()
    except KeyboardInterrupt:
        logger.warning(
            f"interrupted: the last finished epoch is saved; resume with  python train.py --resume "
            f"{config.run_dir / 'last.pth'}"
        )
        raise SystemExit(130) from None
    finally:
        if main_rank:
            config.release_run_dir()
    if config["trainer"]["report"] and main_rank:
        write_run_report(
            config.run_dir,
            config.config,
            run.trainer.history,
            run.trainer.last_val_outputs,
            data_loader,
            valid_data_loader,
            run.summary,
            mistake_cams=mistake_cams_for(run.trainer.eval_model, data_loader.stats),
        )
    return run.trainer.history


def cli(argv=None):
    parser = base_argparser("Train a compact dilated CNN on CIFAR-10")
    add_override_flags(parser)
    parser.add_argument(
        "--allow_spec_violation", action="store_true", help="train even if the network breaks the constraints section"
    )
    args = parser.parse_args(argv)
    return run_main(
        lambda: main(ConfigParser.from_args(args), args.allow_spec_violation),
        interrupted="interrupted before training started: nothing was written",
    )


if __name__ == "__main__":
    sys.exit(cli())
