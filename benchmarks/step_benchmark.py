"""Seconds per epoch of several configs, side by side in one sitting, without data:

    python -m benchmarks.step_benchmark -c config.json -c other.json [--train_images 45000] [--batches 12]

For each config it builds the network, optimizer, loss, weight EMA, batch tricks (progressive
resizing, MixUp/CutMix) and distillation teacher as train.py does, and times train.py's own
train_one_epoch on synthetic batches already in memory (no loader) at every image size the
schedule uses; the training seconds per epoch are the schedule's mean at --train_images images,
plus one validation pass over --valid_images. The configs are timed round-robin, --rounds times, and
each keeps its fastest (a shared machine's noise only ever adds time). Also params and multiply-adds
per image of --image_size pixels (torchinfo). Every config is timed in the same process, one after
the other: compare the rows of one run of this script, never figures from different machines or sittings.
"""

import argparse
import sys
import time
from pathlib import Path

if not __package__:  # run as a file, the project's packages are not importable
    sys.exit("run it from the repository root as a module: python -m benchmarks.step_benchmark ...")

import torch
from torchinfo import summary

import model.metric as module_metric
from config.networks import load_teacher
from config.parser import ConfigParser
from config.reading import load_config
from config.schedules import schedule_epochs
from trainer.batch_tricks import BatchTricks
from trainer.distill import Distiller
from trainer.ema import build_ema
from trainer.hooks import EmaUpdate
from trainer.loops import evaluate, train_one_epoch
from trainer.precision import Precision
from utils.cli import run_main


def synthetic(batches, batch_size, size=32, classes=10):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(batch_size, 3, size, size, generator=g), torch.randint(0, classes, (batch_size,), generator=g))
        for _ in range(batches)
    ]


class Setup:
    """One config's network, optimizer, loss, EMA and batch tricks, built as train.py builds them."""

    def __init__(self, path, args):
        config = ConfigParser(load_config(path))
        self.name, cfg = Path(path).stem, config["trainer"]
        self.batch_size = config["data_loader"]["args"]["batch_size"]
        torch.manual_seed(0)
        model = config.init_obj("arch")
        size = args.image_size
        self.params, self.macs = model.num_params(), summary(model, (1, 3, size, size), verbose=0).total_mult_adds
        self.channels_last = cfg["channels_last"]
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.optimizer = config.init_obj("optimizer", model.parameters())
        self.criterion, self.metrics = config.init_obj("loss"), module_metric.build_metrics(config["metrics"])
        self.ema = build_ema(self.model, cfg["ema"])
        self.distiller = None
        teacher = load_teacher(cfg)
        if teacher is not None:  # the teacher's forward pass on every batch, as train.py runs it
            net, d = teacher[0].model, cfg["distill"]
            net = net.to(memory_format=torch.channels_last) if self.channels_last else net
            self.distiller = Distiller(net, d["alpha"], d["temperature"], d["tta"])
        self.tricks = BatchTricks.from_config(cfg, 10, (size, size), schedule_epochs(cfg))
        hooks = [self.distiller, self.tricks, EmaUpdate(self.ema) if self.ema is not None else None]
        self.step = dict(precision=Precision(channels_last=self.channels_last), hooks=[h for h in hooks if h])
        self.sizes = [
            self.tricks.start_epoch(e).get("image_size", size) if self.tricks else size
            for e in range(1, cfg["epochs"] + 1)
        ]  # the image size of every epoch
        self.data = synthetic(args.batches + 1, self.batch_size, args.image_size)
        self.per_image = {}  # size -> fastest seconds per training image
        self.eval_s = float("inf")

    def time_once(self, args):
        cpu = torch.device("cpu")
        for size in sorted(set(self.sizes)):
            epoch = self.sizes.index(size) + 1
            if self.tricks:
                self.tricks.start_epoch(epoch)
            train_one_epoch(self.model, self.criterion, self.metrics, self.optimizer, self.data[:1], cpu, **self.step)
            start = time.perf_counter()
            train_one_epoch(self.model, self.criterion, self.metrics, self.optimizer, self.data[1:], cpu, **self.step)
            seconds = (time.perf_counter() - start) / (args.batches * self.batch_size)
            self.per_image[size] = min(self.per_image.get(size, float("inf")), seconds)
        valid = synthetic(max(1, args.valid_images // 500), 500, args.image_size)
        start = time.perf_counter()
        evaluate(
            self.ema.module if self.ema else self.model,
            self.criterion,
            self.metrics,
            valid,
            cpu,
            precision=self.step["precision"],
        )
        self.eval_s = min(self.eval_s, (time.perf_counter() - start) * args.valid_images / (len(valid) * 500))

    def row(self, args):
        train_s = sum(self.per_image[s] for s in self.sizes) / len(self.sizes) * args.train_images
        return {
            "config": self.name,
            "params": self.params,
            "macs_M": self.macs / 1e6,
            "train_s": train_s,
            "eval_s": self.eval_s,
            "epoch_s": train_s + self.eval_s,
        }


def main(args):
    torch.set_num_threads(args.threads or torch.get_num_threads())
    setups = [Setup(path, args) for path in args.config]
    setups[0].time_once(args)  # warm-up: thread pools and caches; its timing counts like any other round
    for _ in range(args.rounds):  # round-robin, so that a slow spell of a shared machine hits every config
        for setup in setups:
            setup.time_once(args)
    rows = [setup.row(args) for setup in setups]
    print(
        f"threads {torch.get_num_threads()}; {args.train_images} training + {args.valid_images} validation images; "
        f"fastest of {args.rounds} rounds"
    )
    print("| config | params | MACs/image (M) | train s/epoch | validation s | s/epoch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        seconds = " | ".join(f"{r[k]:.1f}" for k in ("train_s", "eval_s", "epoch_s"))
        print(f"| {r['config']} | {r['params']:,} | {r['macs_M']:.1f} | {seconds} |")
    return rows


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", action="append", required=True, help="a config file (repeat the flag)")
    parser.add_argument("--train_images", type=int, default=45000)
    parser.add_argument("--valid_images", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per image size")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all configs; the fastest is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--image_size", type=int, default=32, help="side of the synthetic square images")
    return run_main(main, parser.parse_args(argv), single_process="step_benchmark.py")


if __name__ == "__main__":
    sys.exit(cli())
