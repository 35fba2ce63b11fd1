"""Write the report of an existing run (curves, confusion matrix, misclassified and augmentation
grids, Grad-CAM of the most confident mistakes, report.md) from one of its checkpoints:
    python report.py --resume saved/<name>/<run>/last.pth [--data_dir D] [--out DIR]
The curves come from the history stored in the checkpoint; the rest from evaluating its weights
on the run's validation split (or the test split when the run validated on it)."""

import startup  # noqa: F401  (first: a Ctrl-C while the modules below load is one line, not a traceback)

# isort: split
import sys
from pathlib import Path

import model.metric as module_metric
from base.base_data_loader import close_workers, pictures
from checkpoint.schema import load_checkpoint, saved_entries
from config.overrides import add_override_flags, base_argparser
from deploy.cam import mistake_cams_for
from deploy.loading import load_trained
from logger import get_logger, setup_logging
from logger.format import format_log
from logger.run_report import write_report
from model.spec import describe
from trainer import evaluate
from trainer.precision import Precision
from utils import resolve_device
from utils.cli import run_main
from utils.errors import ConfigError
from utils.paths import check_writable, default_out


def check_same_split(args, saved):
    """--validation_split / --train_subset, when given, must be the run's own (`saved`: its data_loader args)."""
    for flag, key in (("--validation_split", "validation_split"), ("--train_subset", "train_subset")):
        given = getattr(args, key, None)
        if given is not None and given != saved.get(key, 0):
            raise ConfigError(
                f"{flag}: {given} is not the run's {saved.get(key, 0)}: the report evaluates the run's own "
                "validation split, and another split would count images it trained on; use test.py for other data"
            )


def check_same_data(args, saved_stats, stats):
    """The data read is the run's own: its training images' mean and std are the checkpoint's (the same
    images at another path are; another data set, or another split of it, is not)."""
    if saved_stats and stats != saved_stats:
        where = f"--data_dir {args.data_dir}" if getattr(args, "data_dir", None) else "the run's data_dir"
        raise ConfigError(
            f"{where}: not the data the run trained on (its training images' mean {stats['mean']} differ from the "
            f"checkpoint's {saved_stats['mean']}); the report's figure would not be the run's: use test.py for "
            "other data"
        )


def main(args):
    setup_logging(None, 1)
    out = Path(args.out) if args.out else default_out(args.resume, "report")
    ckpt = load_checkpoint(args.resume)  # read once: the split check below, then the network and data
    check_same_split(args, ckpt["config"]["data_loader"]["args"])
    config, ckpt, model, data_loader = load_trained(args, split="run", ckpt=ckpt)  # bad file or data: nothing made
    check_same_data(args, saved_entries(ckpt).data_stats, data_loader.stats)
    check_writable(out, folder=True)  # before the evaluation, not after it
    valid_loader = data_loader.split_validation()
    device = resolve_device(config["device"])
    model = model.to(device)
    metrics = module_metric.build_metrics(config["metrics"])
    result, probs, targets = evaluate(
        model,
        config.init_obj("loss"),
        metrics,
        valid_loader,
        device,
        precision=Precision.of_run(device, config["trainer"]["amp"])[0],
        return_outputs=True,
    )
    close_workers(valid_loader)  # now, not at exit (base_data_loader.close_workers)
    spec_text, _ = describe(
        model,
        config["constraints"],
        input_size=(1, 3, *data_loader.image_size),
        augmentations=config["data_loader"]["args"].get("augmentations"),
    )
    paths = write_report(
        out,
        config=config.config,
        spec_text=spec_text,
        history=saved_entries(ckpt).history or [],
        classes=data_loader.classes,
        valid_images=pictures(valid_loader),
        valid_names=getattr(valid_loader.dataset, "names", None),
        targets=targets.numpy(),
        probs=probs.numpy(),
        augment=data_loader.augment,
        train_images=pictures(data_loader),
        train_labels=getattr(data_loader.dataset, "labels", None),
        split_name=data_loader.valid_name,
        mistake_cams=mistake_cams_for(model, data_loader.stats),
    )
    logger = get_logger("report")
    logger.info(f"{len(targets)} {data_loader.valid_name} images:\n" + format_log(result))  # as test.py prints
    logger.info("Report: " + ", ".join(str(p) for p in paths.values() if p is not None))
    return paths


def cli(argv=None):
    parser = base_argparser("Write the report of a run from its checkpoint")
    add_override_flags(parser, ("--data_dir", "--validation_split", "--device", "--bs", "--num_workers"), generic=False)
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: beside a checkpoint under saved/, else saved/report/<folder>-<name>)",
    )
    return run_main(main, parser.parse_args(argv), single_process="report.py")


if __name__ == "__main__":
    sys.exit(cli())
