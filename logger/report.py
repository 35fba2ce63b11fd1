"""Pictures and a report of a run: curves.png, confusion_matrix.png, misclassified.png,
augmentations.png and report.md. matplotlib with the Agg backend; every figure is closed."""

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data_loader.transforms import reseed  # noqa: E402
from logger.format import format_value  # noqa: E402


def _save(fig, path):
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(history, path):
    """Loss, every logged metric (train and validation) and the learning rate per epoch."""
    epochs = [h["epoch"] for h in history]
    keys = [k for k in history[0] if k not in ("epoch", "lr") and not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(5 * (len(keys) + 1), 4), constrained_layout=True)
    for ax, key in zip(axes, keys):
        ax.plot(epochs, [h[key] for h in history], label="train")
        if all(f"val_{key}" in h for h in history):
            ax.plot(epochs, [h[f"val_{key}"] for h in history], label="validation")
        ax.set(title=f"{key} (%)" if "acc" in key else key, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if all("lr" in h for h in history):
        axes[-1].plot(epochs, [h["lr"] for h in history], color="tab:green")
    axes[-1].set(title="learning rate (last batch of the epoch)", xlabel="epoch")
    axes[-1].grid(alpha=0.3)
    return _save(fig, path)


def confusion_matrix(targets, predictions, num_classes):
    """counts[i, j] = images of true class i predicted as j."""
    return np.bincount(num_classes * np.asarray(targets) + np.asarray(predictions), minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def per_class_accuracy(cm):
    return 100.0 * np.diag(cm) / np.maximum(cm.sum(axis=1), 1)


def plot_confusion(cm, classes, path, title="confusion matrix"):
    """Counts, with each row's percentage under them; rows are true classes."""
    rows = 100.0 * cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 * n + 3, 0.9 * n + 2), constrained_layout=True)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{rows[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rows[i, j] > 60 else "black",
            )
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"{title} ({cm.sum()} images, {np.trace(cm) / max(cm.sum(), 1):.2%} correct)",
    )
    return _save(fig, path)


def plot_misclassified(images, targets, probs, classes, path, count=36):
    """A grid of wrongly classified images (un-normalised), the most confident mistakes first."""
    probs = np.asarray(probs)
    predictions = probs.argmax(1)
    wrong = np.flatnonzero(predictions != np.asarray(targets))
    wrong = wrong[np.argsort(-probs[wrong, predictions[wrong]])][:count]
    cols = 6
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0, rows * 2.2), constrained_layout=True, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(
            f"true {classes[targets[i]]}\npred {classes[predictions[i]]} {probs[i, predictions[i]]:.0%}", fontsize=8
        )
    fig.suptitle(
        f"{len(wrong)} of {(predictions != np.asarray(targets)).sum()} misclassified images (most confident first)"
    )
    return _save(fig, path)


def plot_augmentations(images, augment, path, versions=6, seed=0):
    """Each row: an original training image, then `versions` outputs of the real augmentation."""
    reseed(augment, seed)
    fig, axes = plt.subplots(
        len(images),
        versions + 1,
        figsize=((versions + 1) * 1.6, len(images) * 1.6),
        constrained_layout=True,
        squeeze=False,
    )
    for r, image in enumerate(images):
        axes[r, 0].imshow(image, interpolation="nearest")
        axes[r, 0].set_title("original" if r == 0 else "", fontsize=8)
        for c in range(1, versions + 1):
            axes[r, c].imshow(augment(image=image)["image"], interpolation="nearest")
            axes[r, c].set_title("augmented" if r == 0 and c == 1 else "", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    return _save(fig, path)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


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
    split_name="validation",
    writer=None,
):
    """Write the four pictures and report.md into `out_dir`; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = np.asarray(targets)
    probs = np.asarray(probs)
    cm = confusion_matrix(targets, probs.argmax(1), len(classes))
    paths = {
        "curves": plot_curves(history, out_dir / "curves.png") if history else None,
        "confusion_matrix": plot_confusion(
            cm, classes, out_dir / "confusion_matrix.png", f"{split_name} confusion matrix"
        ),
        # the image grids need the images as uint8 arrays (datasets that keep them: `.images`)
        "misclassified": plot_misclassified(valid_images, targets, probs, classes, out_dir / "misclassified.png")
        if valid_images is not None
        else None,
        "augmentations": plot_augmentations(
            train_images[np.linspace(0, len(train_images) - 1, 8).astype(int)], augment, out_dir / "augmentations.png"
        )
        if train_images is not None and augment is not None
        else None,
    }
    final = history[-1] if history else {}
    acc = per_class_accuracy(cm)
    lines = [
        f"# Run report: {config['name']}",
        "",
        "## Final metrics (last epoch, not the best one)",
        "",
        _table(["metric", "value"], [[k, format_value(k, v)] for k, v in final.items()]) if final else "(no history)",
        "",
        f"{split_name.capitalize()} accuracy recomputed from the saved predictions: "
        f"{100.0 * np.trace(cm) / cm.sum():.2f}% "
        f"of {cm.sum()} images.",
        "",
        f"## Per-class {split_name} accuracy",
        "",
        _table(
            ["class", "images", "correct", "accuracy (%)"],
            [[c, int(cm[i].sum()), int(cm[i, i]), f"{acc[i]:.2f}"] for i, c in enumerate(classes)],
        ),
        "",
        "## Pictures",
        "",
        *[f"![{name}]({p.name})" for name, p in paths.items() if p is not None],
        "",
        "## Network",
        "",
        "```",
        spec_text,
        "```",
        "",
        "## Config",
        "",
        "```json",
        json.dumps(config, indent=2),
        "```",
        "",
    ]
    paths["report"] = out_dir / "report.md"
    paths["report"].write_text("\n".join(lines))
    if writer is not None:
        step = final.get("epoch", 0)
        for name in ("curves", "confusion_matrix", "misclassified", "augmentations"):
            if paths[name] is not None:
                writer.add_image(f"report/{name}", plt.imread(paths[name])[..., :3], step)
    return paths


def write_run_report(run_dir, config, history, val_outputs, data_loader, valid_data_loader, spec_text):
    """End of train.py: the report of the final-epoch model on the validation split.
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
            targets=targets.numpy(),
            probs=probs.numpy(),
            augment=data_loader.augment,
            train_images=getattr(data_loader.dataset, "images", None),
            split_name=data_loader.valid_name,
            writer=writer,
        )
    finally:
        writer.close()
    logger.info(
        f"Report ({time.perf_counter() - start:.1f} s): " + ", ".join(str(p) for p in paths.values() if p is not None)
    )
    return paths
