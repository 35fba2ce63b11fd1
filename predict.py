"""Predict the classes of your own pictures with a trained network:
    python predict.py --resume pretrained/cifar10_dilatednet.pth cat.jpg photos/ more.tar.gz
INPUTs are image files, folders (searched recursively for jpg, png, webp, bmp, gif, tiff and ppm
files) or tar archives. Any size or mode: converted to RGB and resized to the network's input size (one
line says so). Prints a row per picture (its top-k classes with probabilities); --out writes them as
CSV or JSON; --tta flip averages each picture with its mirror image, --tta multicrop also with 1-pixel
shifts; --cam draws Grad-CAM heat maps (checkpoints only).
The checkpoint may be a .pth of this project or an export.py ONNX file (run by onnxruntime). A
file that is not an image is one line on stderr; the others are still predicted, and the exit
status is 1."""

import startup  # noqa: F401  (first: a Ctrl-C while the modules below load is one line, not a traceback)

# isort: split
import argparse
import csv
import json
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_loader.datasets import MAX_PIXELS
from deploy.images import read_inputs
from deploy.predictor import load_predictor
from model.tta import CHOICES
from utils.cli import run_main
from utils.errors import ConfigError, DataError
from utils.paths import atomic_write, check_writable
from utils.safe_text import for_console, for_csv

BATCH = 256  # pictures per forward pass at 32x32; fewer at larger sizes (batch_for)
BATCH_PIXELS = BATCH * 32 * 32  # what one forward pass may hold, whatever the network's input size


def batch_for(size):
    """Pictures per forward pass for inputs of `size` (h, w): the memory of a 32-px batch of BATCH."""
    return max(1, BATCH_PIXELS // (size[0] * size[1]))


def check_out(path):
    """--out must end in .csv or .json and its folder must be writable: checked before any work."""
    if path is None:
        return
    if Path(path).suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"--out {path}: expected a .csv or .json file name")
    check_writable(path)


def top_k(probs, classes, k):
    order = np.argsort(-probs, axis=1)[:, :k]
    return [[(classes[j], float(p[j])) for j in row] for p, row in zip(probs, order)]


def write_rows(path, rows, k):
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = [
            {"image": name, "top": [{"class": c, "probability": round(p, 6)} for c, p in top]} for name, top in rows
        ]
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n")
        return
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *[h for i in range(1, k + 1) for h in (f"class_{i}", f"probability_{i}")]])
        for name, top in rows:
            writer.writerow([for_csv(name), *[v for c, p in top for v in (for_csv(c), f"{p:.6f}")]])


def _wrapped(name, width=26):
    """A file name in full, over several lines of at most `width` characters."""
    return "\n".join(name[i : i + width] for i in range(0, len(name), width)) or name


def draw_cams(predictor, pictures, probs, folder, per_picture=30):
    """Grad-CAM of each picture's top class, in grids of up to `per_picture` pictures."""
    from deploy.cam import grad_cam
    from logger.plots import plot_cam

    folder.mkdir(parents=True, exist_ok=True)
    top = probs.argmax(1)
    images = np.stack([p.image for p in pictures])
    heat = grad_cam(predictor.network, predictor.stats, images, top)
    paths = []
    for n, i in enumerate(range(0, len(pictures), per_picture), 1):
        part = slice(i, i + per_picture)
        names = [_wrapped(for_console(Path(p.name.split(":")[-1]).name)) for p in pictures[part]]
        titles = [
            f"{name}\n{for_console(predictor.classes[c])} {probs[j, c]:.0%}"
            for j, (name, c) in enumerate(zip(names, top[part]), i)
        ]
        title = "Grad-CAM of the predicted class (red: where the network saw it)"
        paths.append(plot_cam(images[part], heat[part], titles, folder / f"cam_{n}.png", title))
    return paths


def check_args(args):
    """Every flag checked before any work: one line naming it."""
    if args.topk < 1:
        raise ConfigError(f"--topk: expected an integer >= 1, got {args.topk}")
    for item in args.inputs:
        if not Path(item).exists():
            raise DataError(f"{item}: no such file or folder")
    check_out(args.out)
    if args.max_pixels < 1:
        raise ConfigError(f"--max_pixels: expected an integer >= 1, got {args.max_pixels}")
    if args.threads < 0:
        raise ConfigError(f"--threads: expected an integer >= 0 (0: onnxruntime's default), got {args.threads}")
    if args.cam and args.cam_dir:
        check_writable(args.cam_dir, "--cam_dir", folder=True)


def predict_all(predictor, pictures, tta, keep_images=False):
    """(every Picture read, the good ones, their probabilities (N, classes)): the pictures are read and
    predicted a batch at a time (batch_for the network's input size), so what is held at the network's
    size never grows with their count; a good picture keeps its pixels only with keep_images (--cam)."""
    batch, read, good, probs, pending = batch_for(predictor.image_size), [], [], [], []

    def flush():
        probs.append(predictor.predict(np.stack([p.image for p in pending]), tta=tta))
        if not keep_images:
            for p in pending:
                p.image = None  # predicted: its pixels are not needed again
        pending.clear()

    for picture in tqdm(pictures, desc="read and predict", unit=" images", leave=False, disable=None):
        read.append(picture)
        if picture.error:
            continue
        good.append(picture)
        pending.append(picture)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return read, good, np.concatenate(probs) if probs else np.zeros((0, len(predictor.classes)))


def main(args):
    check_args(args)
    predictor = load_predictor(args.checkpoint, args.threads)
    if args.cam and not hasattr(predictor, "network"):
        raise ConfigError("--cam: Grad-CAM needs the network's gradients: give a .pth checkpoint, not an ONNX file")
    h, w = predictor.image_size
    # progress bars on a terminal only (disable=None): a large folder or archive takes a while
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, args.max_pixels)  # Pillow's own ceiling too
    read = read_inputs(args.inputs, (h, w), args.max_pixels)
    pictures, good, probs = predict_all(predictor, read, args.tta, keep_images=args.cam)
    for p in pictures:
        if p.error:
            print(f"error: {for_console(p.error)}", file=sys.stderr)
    resized = [p for p in good if p.original_size != (w, h)]
    if resized:
        ow, oh = resized[0].original_size
        example = for_console(resized[0].name)
        print(f"note: resized {len(resized)} of {len(good)} images to {w}x{h} (e.g. {example}: {ow}x{oh})")
    k = min(args.topk, len(predictor.classes))
    rows = list(zip([p.name for p in good], top_k(probs, predictor.classes, k)))
    for name, top in rows:
        print(f"{for_console(name)}\t" + "\t".join(f"{for_console(c)} {p:.3f}" for c, p in top))
    if args.out and rows:
        write_rows(args.out, rows, k)
        print(f"Wrote {args.out} ({len(rows)} rows)")
    elif args.out:  # nothing to write: an existing file from an earlier run is left as it was
        print(f"{args.out}: not written (no image could be read)", file=sys.stderr)
    if args.cam and good:
        folder = Path(args.cam_dir or Path("saved") / "predict" / datetime.now().strftime("%m%d_%H%M%S"))
        paths = draw_cams(predictor, good, probs, folder)
        print(f"Wrote Grad-CAM pictures: {', '.join(str(p) for p in paths)}")
    if len(good) < len(pictures):
        print(f"{len(pictures) - len(good)} of {len(pictures)} files could not be read as images", file=sys.stderr)
        raise SystemExit(1)
    return rows


def cli(argv=None):
    parser = argparse.ArgumentParser(description="Predict the classes of your own pictures")
    parser.add_argument(
        "-r",
        "--resume",
        "--checkpoint",
        dest="checkpoint",
        required=True,
        help="a .pth checkpoint of this project or an exported .onnx (--checkpoint: the same flag)",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or tar archives")
    parser.add_argument("--topk", type=int, default=3, help="classes shown per image (default 3)")
    parser.add_argument("--out", default=None, help="write the predictions to this .csv or .json file")
    parser.add_argument(
        "--tta",
        choices=CHOICES,
        default="none",
        help="flip: average with the mirror image; multicrop: mirror x 1-pixel shifts (6 passes)",
    )
    parser.add_argument("--cam", action="store_true", help="draw Grad-CAM heat maps of the predicted classes")
    parser.add_argument("--cam_dir", default=None, help="folder for the heat maps (default: saved/predict/<time>/)")
    parser.add_argument(
        "--max_pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"larger pictures are refused before they are decoded (default {MAX_PIXELS:,})",
    )
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: its default)")
    args = parser.parse_args(argv)
    return run_main(main, args, single_process="predict.py")


if __name__ == "__main__":
    sys.exit(cli())
