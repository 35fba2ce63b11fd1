"""Write a weights-only copy of a checkpoint (no optimizer, scheduler or RNG state), for shipping:
    python export.py --resume saved/<name>/<run>/last.pth --out pretrained/cifar10_dilatednet.pth
The copy loads with test.py and report.py like any checkpoint of this project."""

import argparse
import sys

from utils.checkpoint import load_checkpoint, save_atomic
from utils.cli import run_main

KEPT = ("arch", "epoch", "state_dict", "config", "history", "data_stats", "classes", "monitor_best")


def export(src, dst):
    ckpt = load_checkpoint(src)
    weights = {key: ckpt[key] for key in KEPT if key in ckpt}
    save_atomic(weights, dst)
    print(
        f"Wrote {dst} (epoch {weights.get('epoch')}, {sum(v.numel() for v in weights['state_dict'].values()):,} values)"
    )


def cli(argv=None):
    parser = argparse.ArgumentParser(description="Export the weights of a checkpoint for shipping")
    parser.add_argument("-r", "--resume", required=True, help="checkpoint to export")
    parser.add_argument("--out", required=True, help="path of the weights-only copy")
    args = parser.parse_args(argv)
    return run_main(export, args.resume, args.out)


if __name__ == "__main__":
    sys.exit(cli())
