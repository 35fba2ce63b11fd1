"""Inference benchmark: PyTorch eager, onnxruntime fp32 and onnxruntime int8, side by side.

    python -m benchmarks.infer_benchmark --checkpoint pretrained/cifar10_dilatednet.pth [--threads 2]

Exports the checkpoint to ONNX (fp32, and int8 calibrated on 512 training images) in a temporary
folder, then prints for each runtime: latency at batch 1 (median and 95th percentile over --calls
calls, after a warm-up), throughput at batch 256 (images/s), and the exact accuracy on the run's
validation split (the checkpoint's data_dir and validation_split, or --data_dir). Threads: torch and
onnxruntime both get --threads. Nothing is kept.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a file, the project's packages are not importable
    sys.exit("run it from the repository root as a module: python -m benchmarks.infer_benchmark ...")

import numpy as np
import torch

from deploy.onnx_export import accuracy, calibration_set, export_onnx, quantize_int8, run_images
from deploy.predictor import OnnxPredictor, TorchPredictor
from utils.cli import run_main


def latency_ms(predictor, image, calls, warmup=20):
    for _ in range(warmup):
        predictor.logits(image)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        predictor.logits(image)
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times), float(np.percentile(times, 95))


def throughput(predictor, images, repeats=5):
    predictor.logits(images)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        predictor.logits(images)
    return repeats * len(images) / (time.perf_counter() - start)


def main(args):
    torch.set_num_threads(args.threads)
    torch_predictor = TorchPredictor(args.checkpoint)
    train_images, valid_images, valid_labels = run_images(torch_predictor, args.data_dir)
    calibration = calibration_set(train_images)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(torch_predictor, fp32)
        quantize_int8(fp32, int8, calibration)
        runtimes = {
            "pytorch eager fp32": torch_predictor,
            "onnxruntime fp32": OnnxPredictor(fp32, args.threads),
            "onnxruntime int8 (QDQ)": OnnxPredictor(int8, args.threads),
        }
        one = valid_images[:1]
        batch = valid_images[: args.batch]
        for name, predictor in runtimes.items():
            median, p95 = latency_ms(predictor, one, args.calls)
            rows.append(
                (name, median, p95, throughput(predictor, batch), accuracy(predictor, valid_images, valid_labels))
            )
    print(f"threads {args.threads}; validation images {len(valid_labels)}; batch-1 calls {args.calls}")
    print(f"| runtime | batch 1 median ms | batch 1 p95 ms | batch {args.batch} images/s | validation accuracy |")
    print("|---|---|---|---|---|")
    for name, median, p95, ips, acc in rows:
        print(f"| {name} | {median:.3f} | {p95:.3f} | {ips:,.0f} | {acc:.2f}% |")
    return rows


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a .pth checkpoint of this project")
    parser.add_argument("--data_dir", default=None, help="the data (default: the checkpoint's data_dir)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads for both runtimes")
    parser.add_argument("--calls", type=int, default=300, help="batch-1 calls timed per runtime")
    parser.add_argument("--batch", type=int, default=256, help="batch size of the throughput figure")
    return run_main(main, parser.parse_args(argv), single_process="infer_benchmark.py")


if __name__ == "__main__":
    sys.exit(cli())
