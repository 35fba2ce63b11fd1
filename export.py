"""Export a checkpoint for shipping:
python export.py --resume saved/<name>/<run>/last.pth --out pretrained/cifar10_dilatednet.pth
    weights only (no optimizer, scheduler or RNG state); loads with test.py, report.py, predict.py
python export.py --resume CKPT --format onnx --out model.onnx
    ONNX (normalisation inside the graph, dynamic batch); checked against PyTorch on a batch
python export.py --resume CKPT --format onnx-int8 --out model-int8.onnx [--data_dir D]
    static int8 (QDQ) calibrated on training images; its validation accuracy printed next to fp32"""

import startup  # noqa: F401  (first: a Ctrl-C while the modules below load is one line, not a traceback)

# isort: split
import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np

from checkpoint.schema import is_full, load_checkpoint, weights_only
from utils.cli import run_main
from utils.errors import CheckpointError, ConfigError
from utils.paths import DATA_DIR, SAVE_DIR, check_writable, save_atomic

INT8_TOLERANCE = 0.5  # points of validation accuracy int8 may lose before the export says so


def check_out(src, dst):
    """Refuse to overwrite the source checkpoint or any run's full (resumable) checkpoint, and a folder
    that cannot be written, before any work."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise ConfigError(f"--out {dst}: is the checkpoint being exported; write the export to another file")
    if dst.is_file() and dst.suffix == ".pth":
        try:
            resumable = is_full(load_checkpoint(dst))
        except CheckpointError:  # not a checkpoint of this project: an old export may be replaced
            resumable = False
        if resumable:
            raise ConfigError(
                f"--out {dst}: is a run's full checkpoint, which a resume needs (optimizer and RNG state); "
                "write the export to another file"
            )
    check_writable(dst)


def portable(config):
    """The config an export carries: the training machine's data and output paths replaced by
    config.json's defaults (a path on another machine means nothing to the export's users, and
    test.py and report.py take --data_dir anyway), and a distillation teacher's and a starting point's
    (trainer.init) by their file names."""
    config = copy.deepcopy(config)
    args = config.get("data_loader", {}).get("args", {})
    if "data_dir" in args:
        args["data_dir"] = DATA_DIR
    if "save_dir" in config.get("trainer", {}):
        config["trainer"]["save_dir"] = SAVE_DIR
    distill = config.get("trainer", {}).get("distill")
    if isinstance(distill, dict) and isinstance(distill.get("teacher"), str):
        distill["teacher"] = Path(distill["teacher"]).name  # which file taught it, not where it lay
    trainer = config.get("trainer", {})
    if isinstance(trainer, dict) and isinstance(trainer.get("init"), str):
        trainer["init"] = Path(trainer["init"]).name  # which weights it started from
    return config


def export_weights(src, dst):
    ckpt = load_checkpoint(src)
    weights = weights_only(ckpt)
    weights["config"] = portable(weights["config"])
    save_atomic(weights, dst)
    print(
        f"Wrote {dst} (epoch {weights.get('epoch')}, {sum(v.numel() for v in weights['state_dict'].values()):,} values)"
    )


SUFFIXES = {"weights": (".pth", ".pt"), "onnx": (".onnx",), "onnx-int8": (".onnx",)}


def check_suffix(dst, fmt):
    """The file name says what it holds: predict.py and the README go by it (.onnx: an ONNX graph)."""
    if Path(dst).suffix.lower() not in SUFFIXES[fmt]:
        raise ConfigError(
            f"--out {dst}: --format {fmt} writes a {' or '.join(SUFFIXES[fmt])} file (predict.py reads a file by "
            "its name); name it so, or pick the --format that matches"
        )


def export(src, dst, fmt="weights", data_dir=None):
    check_suffix(dst, fmt)
    check_out(src, dst)
    if fmt == "weights":
        return export_weights(src, dst)
    from deploy.onnx_export import accuracy, calibration_set, compare, export_onnx, quantize_int8, run_images
    from deploy.predictor import OnnxPredictor, TorchPredictor

    predictor = TorchPredictor(src)
    h, w = predictor.image_size  # 64 pictures at 32 px, fewer at larger sizes: the check's memory stays bounded
    probe = np.random.default_rng(0).integers(
        0, 256, (max(2, min(64, 64 * 32 * 32 // (h * w))), h, w, 3), dtype=np.uint8
    )
    if fmt == "onnx":
        export_onnx(predictor, dst)
        diff, same = compare(predictor, dst, probe)
        print(f"Wrote {dst} (ONNX opset 18; input 'pixels': float32 (N, 3, H, W) RGB 0..255, normalised in the graph)")
        print(
            f"onnxruntime vs PyTorch on {len(probe)} images: max abs logit difference {diff:.2e}; "
            f"argmax identical: {same}"
        )
        if not same:
            raise CheckpointError(f"{dst}: onnxruntime and PyTorch disagree on the class of some images")
        return
    train_images, valid_images, valid_labels = run_images(predictor, data_dir)
    calibration = calibration_set(train_images)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(predictor, fp32)
        quantize_int8(fp32, dst, calibration)
        fp32_acc = accuracy(OnnxPredictor(fp32), valid_images, valid_labels)
    int8_acc = accuracy(OnnxPredictor(dst), valid_images, valid_labels)
    print(f"Wrote {dst} (int8 QDQ: per-channel int8 weights, uint8 activations; {len(calibration)} calibration images)")
    print(f"validation accuracy ({len(valid_labels)} images): fp32 {fp32_acc:.2f}%  int8 {int8_acc:.2f}%")
    if fp32_acc - int8_acc > INT8_TOLERANCE:
        print(f"warning: int8 loses {fp32_acc - int8_acc:.2f} points of validation accuracy (more than 0.5)")


def cli(argv=None):
    parser = argparse.ArgumentParser(description="Export a checkpoint for shipping")
    parser.add_argument("-r", "--resume", required=True, help="checkpoint to export")
    parser.add_argument("--out", required=True, help="path of the exported file")
    parser.add_argument(
        "--format", choices=("weights", "onnx", "onnx-int8"), default="weights", help="what to write (default: weights)"
    )
    parser.add_argument("--data_dir", default=None, help="onnx-int8: the data (default: the checkpoint's data_dir)")
    args = parser.parse_args(argv)
    return run_main(export, args.resume, args.out, args.format, args.data_dir, single_process="export.py")


if __name__ == "__main__":
    sys.exit(cli())
