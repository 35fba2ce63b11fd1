"""The pictures of a run: training curves, confusion matrix, misclassified images, augmented
samples. matplotlib with the Agg backend; every figure is closed."""

import numpy as np

from logger.keys import EPOCH, LR, TIMING_KEYS, is_val_key, val_key
from utils.paths import atomic_write


def _pyplot():
    """pyplot on the Agg backend, imported when the first picture is drawn: a training process that
    draws none (a tuning trial, a rank other than 0) saves the ~0.4 s of its import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    plt = _pyplot()
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return path


def read_rgb(path):
    """A saved picture as an (H, W, 3) float array, for TensorBoard."""
    plt = _pyplot()
    return plt.imread(path)[..., :3]


def plot_curves(history, path):
    """Loss, every logged metric (train and validation) and the learning rate per epoch, two panels a
    row, whole-number epoch ticks."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h[EPOCH] for h in history]
    keys = [k for k in history[0] if k not in (EPOCH, LR, *TIMING_KEYS) and not is_val_key(k)]
    rows = (len(keys) + 2) // 2
    fig, grid = plt.subplots(rows, 2, figsize=(11, 3.6 * rows), constrained_layout=True, squeeze=False)
    for ax in grid.flat[len(keys) + 1 :]:
        ax.axis("off")  # an odd number of panels leaves one cell empty
    axes = list(grid.flat[: len(keys) + 1])
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, key in zip(axes, keys):
        ax.plot(epochs, [h[key] for h in history], label="train", marker=".")
        if all(val_key(key) in h for h in history):
            ax.plot(epochs, [h[val_key(key)] for h in history], label="validation", marker=".")
        ax.set(title=f"{key} (%)" if "acc" in key else key, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if all(LR in h for h in history):
        axes[-1].plot(epochs, [h[LR] for h in history], color="tab:green", marker=".")
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
    plt = _pyplot()
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


def _image_grid(rows, cols, cell_width, cell_height, top=0.0, title_lines=2):
    """A rows x cols grid of picture axes, cell_width x cell_height inches each plus `top` inches for a
    title, room over each picture for `title_lines` lines of caption. A fixed layout: matplotlib's
    constrained layout takes about a second for this many axes."""
    plt = _pyplot()
    height = rows * cell_height + top
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell_width, height), squeeze=False)
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - (top + 0.35) / height, wspace=0.08, hspace=0.2 * title_lines
    )
    return fig, axes


def plot_misclassified(images, targets, probs, classes, path, count=36, names=None):
    """A grid of wrongly classified images (un-normalised), the most confident mistakes first, each
    with its file name (`names`, where the data has them) or its index in the evaluated split (the
    order of its loader) to find it again."""
    probs = np.asarray(probs)
    predictions = probs.argmax(1)
    wrong = np.flatnonzero(predictions != np.asarray(targets))
    wrong = wrong[np.argsort(-probs[wrong, predictions[wrong]])][:count]
    cols = 6
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = _image_grid(rows, cols, 2.0, 2.2, top=0.5)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(
            f"{names[i] if names is not None else f'#{i}'}: true {classes[targets[i]]}\n"
            f"pred {classes[predictions[i]]} {probs[i, predictions[i]]:.0%}",
            fontsize=8,
        )
    fig.suptitle(
        f"{len(wrong)} of {(predictions != np.asarray(targets)).sum()} misclassified images (most confident first)"
    )
    return _save(fig, path)


def plot_augmentations(images, augment, path, versions=6, labels=None):
    """Each row: an original training image (captioned with its class when `labels` gives one per
    row), then `versions` outputs of the real augmentation (a new loader's `augment` starts seeded:
    data_loader.transforms.build_augment)."""
    fig, axes = _image_grid(len(images), versions + 1, 1.6, 1.6, title_lines=1)
    for r, image in enumerate(images):
        axes[r, 0].imshow(image, interpolation="nearest")
        caption = labels[r] if labels is not None else ("original" if r == 0 else "")
        axes[r, 0].set_title(caption, fontsize=8)
        for c in range(1, versions + 1):
            axes[r, c].imshow(augment(image=image)["image"], interpolation="nearest")
            axes[r, c].set_title(f"augmented {c}" if r == 0 else "", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    return _save(fig, path)


def plot_cam(images, heatmaps, titles, path, title, pairs=3):
    """Each picture twice, as it is and with its Grad-CAM heat map over it (jet, a third opaque),
    `pairs` pictures a row, its caption over the pair, and one colour bar for the figure."""
    plt = _pyplot()
    pairs = max(1, min(pairs, len(images)))  # one picture: one pair wide, not a row of empty pairs
    rows = max(1, int(np.ceil(len(images) / pairs)))
    # a fixed layout, as _image_grid's
    height = rows * 2.5 + 0.6
    fig, axes = plt.subplots(rows, 2 * pairs, figsize=(pairs * 4.2 + 1.2, height), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.88, bottom=0.02, top=1 - 0.7 / height, wspace=0.06, hspace=0.5)
    for ax in axes.flat:
        ax.axis("off")
    for k, (image, heat, caption) in enumerate(zip(images, heatmaps, titles)):
        plain, over = axes[k // pairs, 2 * (k % pairs)], axes[k // pairs, 2 * (k % pairs) + 1]
        plain.imshow(image, interpolation="bilinear")
        plain.set_title(caption, fontsize=8, loc="left")
        over.imshow(image, interpolation="bilinear")
        over.imshow(heat, cmap="jet", alpha=0.35, vmin=0, vmax=1, interpolation="bilinear")
    scale = plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap="jet")  # opaque, unlike the overlays
    fig.colorbar(scale, cax=fig.add_axes((0.91, 0.25, 0.015, 0.5)), label="Grad-CAM (0: no evidence, 1: the most)")
    fig.suptitle(title)
    return _save(fig, path)
