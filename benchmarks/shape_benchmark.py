"""CPU seconds per epoch of several network shapes on real data, side by side in one sitting, and
what each one's whole recipe costs:

    python -m benchmarks.shape_benchmark -c configs/shapes/a_dilatednet.json -c configs/shapes/b_mbv2_se.json \\
        --data_dir D --validation_split 5000 [--batches 12] [--rounds 2]

The training images are read once, through the first config's loader (the same augmentations, the
same worker processes as train.py); every config then trains train.py's own train_one_epoch on
--batches batches of that loader at each image size its schedule uses (progressive resizing), after
one untimed warm-up batch. Configs are timed round-robin and each keeps its fastest round. The table
gives params, multiply-adds per 32x32 image, s/epoch at the smallest and the full size, the CPU
minutes of the config's whole schedule (validation and averaging passes left out), and the epochs
that give each config the first config's CPU minutes ("equal-time epochs"). Compare rows of one run
only, and name the CPU beside them.
"""

import argparse
import sys
import time

if not __package__:  # run as a file, the project's packages are not importable
    sys.exit("run it from the repository root as a module: python -m benchmarks.shape_benchmark ...")

import torch

from benchmarks.step_benchmark import Setup
from config.parser import ConfigParser
from config.reading import load_config
from trainer.loops import Limited, train_one_epoch
from utils.cli import run_main


def time_sizes(setup, loader, batches):
    """{size: seconds per training batch} of `setup` on `batches` real batches at each of its sizes."""
    cpu, seconds = torch.device("cpu"), {}
    for size in sorted(set(setup.sizes)):
        if setup.tricks:
            setup.tricks.start_epoch(setup.sizes.index(size) + 1)
        run = dict(setup.step, hooks=[h for h in setup.step["hooks"] if h is not setup.distiller])
        train_one_epoch(setup.model, setup.criterion, setup.metrics, setup.optimizer, Limited(loader, 1), cpu, **run)
        start = time.perf_counter()
        train_one_epoch(
            setup.model, setup.criterion, setup.metrics, setup.optimizer, Limited(loader, batches), cpu, **run
        )
        seconds[size] = (time.perf_counter() - start) / batches
    return seconds


def main(args):
    first = ConfigParser(load_config(args.config[0]))
    data_args = {**first["data_loader"]["args"], "data_dir": args.data_dir, "validation_split": args.validation_split}
    loader = first.init_obj("data_loader", **data_args)
    per_epoch = len(loader)
    setups = [Setup(path, argparse.Namespace(image_size=32, batches=0)) for path in args.config]
    best = [{} for _ in setups]
    for _ in range(args.rounds):
        for setup, fastest in zip(setups, best):
            for size, s in time_sizes(setup, loader, args.batches).items():
                fastest[size] = min(fastest.get(size, float("inf")), s)
    print(
        f"{per_epoch} batches per epoch; {args.batches} timed batches per size; fastest of {args.rounds} rounds; "
        f"torch threads {torch.get_num_threads()}, loader workers {loader.num_workers}"
    )
    print(
        "| config | params | MACs (M) | s/epoch at smallest size | s/epoch at 32 px | epochs | recipe CPU min | "
        "equal-time epochs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for setup, fastest in zip(setups, best):
        minutes = sum(fastest[s] for s in setup.sizes) * per_epoch / 60
        rows.append((setup, fastest, minutes))
    base_minutes = rows[0][2]
    for setup, fastest, minutes in rows:
        small = min(fastest)
        print(
            f"| {setup.name} | {setup.params:,} | {setup.macs / 1e6:.1f} | "
            f"{fastest[small] * per_epoch:.1f} ({small} px) | "
            f"{fastest[max(fastest)] * per_epoch:.1f} | {len(setup.sizes)} | {minutes:.0f} | "
            f"{len(setup.sizes) * base_minutes / minutes:.0f} |"
        )
    return rows


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", action="append", required=True, help="a config file (repeat the flag)")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--validation_split", type=lambda v: float(v) if "." in v else int(v), default=5000)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per image size")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all configs; the fastest is kept")
    return run_main(main, parser.parse_args(argv), single_process="shape_benchmark.py")


if __name__ == "__main__":
    sys.exit(cli())
