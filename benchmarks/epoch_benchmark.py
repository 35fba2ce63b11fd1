"""Seconds per training epoch on real data, for run-time settings side by side:

    python -m benchmarks.epoch_benchmark -c config.json --data_dir D --validation_split 5000 \\
        --variant workers=1,threads=2 --variant workers=0 --variant amp=bf16 --variant flush_denormal=1 \\
        [--weights pretrained/cifar10_dilatednet.pth] [--batches 30] [--rounds 2]

Each variant builds the run as train.py does (train.build: the same loader, network,
optimizer, precision and memory format), then times the Trainer's own training step over --batches
batches of the real loader at the full image size or the variant's size (after 3 untimed warm-up
batches), and prints the mean seconds per batch and what a full epoch of the training images would
take. Settings a variant may change: workers (DataLoader processes), threads (torch compute
threads), amp (trainer.amp), flush_denormal (0/1: subnormal floats computed as zero), size (the
image side the step trains at, as progressive resizing shrinks it; default the full size).
--weights starts every variant from a checkpoint's weights (e.g. a late-training state, to see
whether trained weights cost more than fresh ones). Variants are timed round-robin and each keeps
its fastest round (noise only adds time). Nothing is written. Compare rows of one run of this
script only, and name the CPU beside them.
"""

import sys
import time

if not __package__:  # run as a file, the project's packages are not importable
    sys.exit("run it from the repository root as a module: python -m benchmarks.epoch_benchmark ...")

import torch

from checkpoint.saver import RunFiles
from checkpoint.schema import load_checkpoint, load_model_state
from config.overrides import add_override_flags, base_argparser
from config.parser import ConfigParser
from logger import setup_logging
from train import build
from trainer.loops import Limited
from utils import UserError, resolve_device, seed_everything
from utils.cli import run_main

SETTINGS = {"workers": int, "threads": int, "amp": str, "flush_denormal": int, "size": int}


def parse_variant(text):
    """'workers=1,threads=2' -> {"workers": 1, "threads": 2}; an unknown setting is an error."""
    variant = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or key not in SETTINGS:
            raise UserError(f"--variant {text!r}: expected key=value pairs of {', '.join(SETTINGS)}")
        variant[key] = SETTINGS[key](value)
    return variant


def time_variant(base, variant, args):
    """Mean seconds per training batch of `variant`, at its size (default the full image size)."""
    torch.set_num_threads(variant.get("threads", args.default_threads))
    torch.set_flush_denormal(bool(variant.get("flush_denormal", 0)))
    size = variant.get("size")  # a smaller side: progressive resizing's first epoch, at that size
    resize = {"min_size": size, "until": 1.0} if size else None
    changes = {("trainer", "progressive_resize"): resize, ("trainer", "tensorboard"): False}
    if "workers" in variant:
        changes[("data_loader", "args", "num_workers")] = variant["workers"]
    if "amp" in variant:
        changes[("trainer", "amp")] = variant["amp"]
    config = ConfigParser(base.config, modification=changes)
    seed_everything(config["seed"])
    trainer, _ = build(config, resolve_device(config["device"]), RunFiles.of(config))
    if size:
        trainer.tricks.start_epoch(1)
    if args.weights:
        load_model_state(trainer.model, load_checkpoint(args.weights), args.weights)
    trainer.train_batches(Limited(trainer.data_loader, 3), "warm-up")  # workers, thread pools, caches
    start = time.perf_counter()
    trainer.train_batches(Limited(trainer.data_loader, args.batches), "timed")
    seconds = (time.perf_counter() - start) / args.batches
    return seconds, len(trainer.data_loader)


def benchmark(args):
    setup_logging(None, 0)
    base = ConfigParser.from_args(args)
    variants = [parse_variant(v) for v in args.variant] or [{}]
    args.default_threads = torch.get_num_threads()
    best = [float("inf")] * len(variants)
    for _ in range(args.rounds):
        for i, variant in enumerate(variants):
            seconds, batches = time_variant(base, variant, args)
            best[i] = min(best[i], seconds)
    print(f"{batches} batches per epoch; {args.batches} timed batches per variant; fastest of {args.rounds} rounds")
    print("| variant | s/batch | s/epoch (training, at the variant's size) |")
    print("|---|---|---|")
    for variant, seconds in zip(variants, best):
        name = ", ".join(f"{k}={v}" for k, v in variant.items()) or "the config as it is"
        print(f"| {name} | {seconds:.3f} | {seconds * batches:.1f} |")
    return dict(zip(args.variant or ["config"], best))


def cli(argv=None):
    parser = base_argparser("Seconds per training epoch of run-time settings, on real data")
    add_override_flags(parser)
    parser.add_argument("--variant", action="append", default=[], help="e.g. workers=0,threads=2 (repeat the flag)")
    parser.add_argument("--weights", default=None, help="start every variant from this checkpoint's weights")
    parser.add_argument("--batches", type=int, default=30, help="timed batches per variant and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all variants; the fastest is kept")
    return run_main(benchmark, parser.parse_args(argv), single_process="benchmarks/epoch_benchmark.py")


if __name__ == "__main__":
    sys.exit(cli())
