"""The report of a run: report.md, with the pictures of logger/plots.py (curves.png,
confusion_matrix.png, misclassified.png, augmentations.png)."""

import json
import shlex
import time
from pathlib import Path

import numpy as np

from logger.format import format_value
from logger.keys import describe_duration, training_seconds
from logger.logger import get_logger
from logger.plots import (
    confusion_matrix,
    per_class_accuracy,
    plot_augmentations,
    plot_confusion,
    plot_curves,
    plot_misclassified,
    read_rgb,
)
from utils.cli import Terminated, exit_status, ignore_further_interrupts
from utils.errors import ReportError
from utils.paths import atomic_write
from utils.safe_text import for_console, for_markdown


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def augmentation_rows(images, labels, rows=8):
    """Indices of the training images the augmentation picture shows: the first of each class when
    the labels are known (every class once), else `rows` spread over the set."""
    if images is None:
        return []
    if labels is None:
        return np.linspace(0, len(images) - 1, rows).astype(int)
    labels = np.asarray(labels)
    return np.array([int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)])


def tta_lines(tta):
    """report.md's test-time augmentation table: {"flip": {metric: value}, ...}, its own figures."""
    metrics = list(next(iter(tta.values())))
    return [
        "Test-time augmentation of the final weights (their own figures; the plain figure above is the headline):",
        "",
        _table(
            ["views", *metrics],
            [[kind, *(format_value(m, values[m]) for m in metrics)] for kind, values in tta.items()],
        ),
        "",
    ]


def write_report(
    out_dir,
    *,
    config,
    spec_text,
    history,
    classes,
    valid_images,
    targets,
    probs,
    augment,
    train_images,
    train_labels=None,
    split_name="validation",
    writer=None,
    mistake_cams=None,
    valid_names=None,
    tta=None,
):
    """Write the pictures and report.md into `out_dir`; return their paths. mistake_cams: a function
    (images, targets, probs, classes, path) -> path drawing the Grad-CAM heat maps of the most
    confident mistakes (deploy.cam.plot_mistake_cams with the network bound), or None."""
    classes = [for_console(c) for c in classes]  # names from data: no control characters in the pictures
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets, probs = np.asarray(targets), np.asarray(probs)
    cm = confusion_matrix(targets, probs.argmax(1), len(classes))
    paths = {
        "curves": plot_curves(history, out_dir / "curves.png") if history else None,
        "confusion_matrix": plot_confusion(
            cm, classes, out_dir / "confusion_matrix.png", f"{split_name} confusion matrix"
        ),
        **_image_grids(out_dir, classes, valid_images, valid_names, targets, probs, mistake_cams),
        "augmentations": _augmentation_picture(out_dir, classes, train_images, train_labels, augment),
    }
    report = out_dir / "report.md"
    with atomic_write(report) as tmp:
        tmp.write_text("\n".join(_markdown(config, spec_text, history, cm, classes, split_name, tta, paths)))
    if writer is not None:
        _to_tensorboard(writer, paths, (history[-1] if history else {}).get("epoch", 0))
    return {**paths, "report": report}


def _markdown(config, spec_text, history, cm, classes, split_name, tta, pictures):
    """The lines of report.md: the figures, each class, the pictures, the network and the config."""
    final = history[-1] if history else {}
    return [
        f"# Run report: {config['name']}",
        "",
        *_metric_lines(final, history, cm, split_name, tta),
        *_per_class_lines(cm, classes, split_name),
        "## Pictures",
        "",
        *[f"![{name}]({p.name})" for name, p in pictures.items() if p is not None],
        "",
        *["## Network", "", "```", spec_text, "```", ""],
        *["## Config", "", "```json", json.dumps(config, indent=2), "```", ""],
    ]


def _to_tensorboard(writer, pictures, epoch):
    """The report's pictures as TensorBoard images, under report/."""
    for name in ("curves", "confusion_matrix", "misclassified", "augmentations", "gradcam_mistakes"):
        if pictures.get(name) is not None:
            writer.add_image(f"report/{name}", read_rgb(pictures[name]), epoch)


def _image_grids(out_dir, classes, valid_images, valid_names, targets, probs, mistake_cams):
    """misclassified.png and gradcam_mistakes.png: they need the validation pictures as uint8 arrays
    (datasets that keep them: `.images`); None where they cannot be drawn."""
    if valid_images is None:
        return {"misclassified": None, "gradcam_mistakes": None}
    names = [for_console(n) for n in valid_names] if valid_names is not None else None
    return {
        "misclassified": plot_misclassified(
            valid_images, targets, probs, classes, out_dir / "misclassified.png", names=names
        ),
        "gradcam_mistakes": mistake_cams(
            valid_images, targets, probs, classes, out_dir / "gradcam_mistakes.png", names=names
        )
        if mistake_cams is not None
        else None,
    }


def _augmentation_picture(out_dir, classes, train_images, train_labels, augment):
    if train_images is None or augment is None:
        return None
    shown = augmentation_rows(train_images, train_labels)
    labels = [f"original: {classes[int(train_labels[i])]}" for i in shown] if train_labels is not None else None
    return plot_augmentations(train_images[shown], augment, out_dir / "augmentations.png", labels=labels)


def _metric_lines(final, history, cm, split_name, tta):
    seconds, timed = training_seconds(history)
    return [
        "## Final metrics (last epoch, not the best one)",
        "",
        _table(["metric", "value"], [[k, format_value(k, v)] for k, v in final.items()]) if final else "(no history)",
        "",
        f"{split_name.capitalize()} accuracy recomputed from the saved predictions: "
        f"{100.0 * np.trace(cm) / cm.sum():.2f}% of {cm.sum()} images.",
        "",
        f"Training time: {describe_duration(seconds, timed)} (training and validation, as logged)." if timed else "",
        "",
        *(tta_lines(tta) if tta else []),
    ]


def _per_class_lines(cm, classes, split_name):
    acc = per_class_accuracy(cm)
    return [
        f"## Per-class {split_name} accuracy",
        "",
        _table(
            ["class", "images", "correct", "accuracy (%)"],
            [[for_markdown(c), int(cm[i].sum()), int(cm[i, i]), f"{acc[i]:.2f}"] for i, c in enumerate(classes)],
        ),
        "",
    ]


def write_run_report(
    run_dir, config, history, val_outputs, data_loader, valid_data_loader, spec_text, mistake_cams=None, tta=None
):
    """End of train.py: the report of the final-epoch model on the validation split (mistake_cams: see
    write_report).
    config: the effective config dict; history: the epoch logs; val_outputs: (probabilities, targets)
    of the last validation, or None; spec_text: the summary and constraint table printed before
    training."""
    from logger import TensorboardWriter, get_logger

    logger = get_logger("report")
    if valid_data_loader is None or val_outputs is None:
        logger.info("No report: no epoch was validated in this run (report.py writes one from a checkpoint)")
        return None
    start = time.perf_counter()
    probs, targets = val_outputs
    writer = TensorboardWriter(run_dir, config["trainer"]["tensorboard"])
    try:
        paths = write_report(
            run_dir,
            config=config,
            spec_text=spec_text,
            history=history,
            classes=data_loader.classes,
            valid_images=getattr(valid_data_loader.dataset, "images", None),
            valid_names=getattr(valid_data_loader.dataset, "names", None),
            targets=targets.numpy(),
            probs=probs.numpy(),
            augment=data_loader.augment,
            train_images=getattr(data_loader.dataset, "images", None),
            train_labels=getattr(data_loader.dataset, "labels", None),
            split_name=data_loader.valid_name,
            writer=writer,
            mistake_cams=mistake_cams,
            tta=tta,
        )
    finally:
        writer.close()
    written = [p for p in paths.values() if p is not None]
    folders = {Path(p).parent for p in written}
    where = f" in {folders.pop()}" if len(folders) == 1 else ""
    names = [Path(p).name if where else str(p) for p in written]
    logger.info(f"Report ({time.perf_counter() - start:.1f} s){where}: " + ", ".join(names))
    return paths


def write_final_report(run_dir, *args, **kwargs):
    """write_run_report at the end of training. Training has finished by now: a stop or a full disk
    while the report is written says so, and how to write the report later (report.py), instead of
    a traceback."""
    later = f"python report.py --resume {shlex.quote(str(run_dir / 'last.pth'))}"
    try:
        return write_run_report(run_dir, *args, **kwargs)
    except KeyboardInterrupt as e:
        ignore_further_interrupts()
        what = "stopped (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        get_logger("train").warning(
            f"{what} while writing the report: training has finished and its checkpoints are saved in "
            f"{run_dir}; write the report with  {later}"
        )
        raise SystemExit(exit_status(e)) from None
    except OSError as e:
        raise ReportError(
            f"{e.filename or run_dir}: cannot write the report ({e.strerror or e}); training has finished "
            f"and its checkpoints are saved: once there is room, write the report with  {later}"
        ) from None
