"""Evaluate a checkpoint on the test split:  python test.py --resume CKPT [--data_dir D] [--tta flip|multicrop]
Prints loss, accuracy and per-class accuracy (with --tta, then the test-time-augmented loss and
accuracy on lines of their own, never in place of the plain ones); writes the confusion
matrix, the misclassified grid, Grad-CAM heat maps of the most confident mistakes and the metrics
into --out; by default beside a checkpoint of the save_dir (saved/), and for a checkpoint elsewhere
(pretrained/, ...) into saved/test/<folder>-<name>/, never beside it."""

import startup  # noqa: F401  (first: a Ctrl-C while the modules below load is one line, not a traceback)

# isort: split
import functools
import json
import sys
from pathlib import Path

import model.metric as module_metric
from base.base_data_loader import close_workers, pictures
from checkpoint.schema import saved_entries
from config.overrides import add_override_flags, base_argparser
from deploy.cam import plot_mistake_cams
from deploy.loading import load_trained
from logger import get_logger, setup_logging
from logger.format import format_log
from logger.keys import tta as log_tta
from logger.plots import confusion_matrix, per_class_accuracy, plot_confusion, plot_misclassified
from model.tta import CHOICES, LABELS
from trainer import evaluate
from trainer.precision import Precision
from utils import resolve_device
from utils.cli import run_main
from utils.paths import atomic_write, check_writable, default_out
from utils.safe_text import for_console


def main(args):
    setup_logging(None, 1)
    logger = get_logger("test")
    out = Path(args.out) if args.out else default_out(args.resume, "test")
    config, ckpt, model, data_loader = load_trained(args, split="test")  # a bad checkpoint or data: nothing made
    check_writable(out, folder=True)  # before the evaluation, not after it
    if any(out.glob("test_*")):
        logger.warning(f"note: {out} holds the results of an earlier test.py; they are replaced (--out keeps both)")
    device = resolve_device(config["device"])
    model = model.to(device)
    criterion = config.init_obj("loss")
    metrics = module_metric.build_metrics(config["metrics"])
    run = functools.partial(
        evaluate,
        model,
        criterion,
        metrics,
        data_loader,
        device,
        precision=Precision.of_run(device, config["trainer"]["amp"])[0],
        desc="test",  # the progress bar's name (on a terminal)
    )
    result, probs, targets = run(return_outputs=True)
    tta = run(tta=args.tta, desc=f"test, {args.tta} TTA") if args.tta != "none" else None
    close_workers(data_loader)  # now, not at exit (base_data_loader.close_workers)
    cm = confusion_matrix(targets.numpy(), probs.numpy().argmax(1), len(data_loader.classes))
    classes = [for_console(c) for c in data_loader.classes]  # names from data: printable, drawable, JSON-safe
    per_class = {f"acc_{c}": float(a) for c, a in zip(classes, per_class_accuracy(cm))}
    log = {"images": int(cm.sum()), **result, **per_class}
    logger.info(format_log(log))
    if tta is not None:
        tta = {log_tta(k, args.tta): v for k, v in tta.items()}
        logger.info(
            f"{LABELS[args.tta]} test-time augmentation (its own figure; the lines above are the plain one):\n"
            + format_log(tta)
        )
        log.update(tta)

    draw_pictures(out, model, data_loader, classes, cm, targets.numpy(), probs.numpy())
    write_metrics(out / "test_metrics.json", args.resume, saved_entries(ckpt).epoch, log, cm)
    logger.info(f"Wrote {', '.join(sorted(p.name for p in out.glob('test_*')))} in {out}")
    return log


def write_metrics(path, checkpoint, epoch, log, cm):
    """test_metrics.json: the checkpoint, its epoch, every figure printed and the confusion matrix."""
    record = {"checkpoint": str(checkpoint), "epoch": epoch, **log, "confusion_matrix": cm.tolist()}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def draw_pictures(out, model, data_loader, classes, cm, targets, probs):
    """The confusion matrix, and for data that keeps its pictures the most confident mistakes (named
    by file where the data has files) and their Grad-CAM maps."""
    plot_confusion(cm, classes, out / "test_confusion_matrix.png", "test confusion matrix")
    images = pictures(data_loader)  # uint8 pictures, for datasets that keep them
    if images is None:
        return
    names = getattr(data_loader.dataset, "names", None)
    names = [for_console(n) for n in names] if names is not None else None
    plot_misclassified(images, targets, probs, classes, out / "test_misclassified.png", names=names)
    cams = out / "test_gradcam_mistakes.png"
    plot_mistake_cams(model, data_loader.stats, images, targets, probs, classes, cams, names=names)


def cli(argv=None):
    parser = base_argparser("Evaluate a checkpoint on the CIFAR-10 test split")
    add_override_flags(parser, ("--data_dir", "--device", "--bs", "--num_workers"), generic=False)
    parser.add_argument(
        "--out",
        default=None,
        help="folder for the pictures and test_metrics.json (default: the checkpoint's folder under saved/, "
        "else saved/test/<folder>-<name>)",
    )
    parser.add_argument(
        "--tta",
        choices=CHOICES,
        default="none",
        help="also print the accuracy with test-time augmentation (flip: mean logits of each image and its "
        "mirror; multicrop: of the mirror pairs of the image and of two 1-pixel shifts)",
    )
    return run_main(main, parser.parse_args(argv), single_process="test.py")


if __name__ == "__main__":
    sys.exit(cli())
