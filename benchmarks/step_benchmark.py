"""Seconds per epoch of several configs, side by side in one sitting, without data:

    python benchmarks/step_benchmark.py -c config.json -c other.json [--train_images 45000] [--batches 12]

For each config it builds the network, optimizer, loss, weight EMA and batch tricks (progressive
resizing, selective backprop, MixUp/CutMix) as train.py does, and times train.py's own
train_one_epoch on synthetic batches already in memory (no loader) at every image size the
schedule uses; the training seconds per epoch are the schedule's mean at --train_images images,
plus one validation pass over --valid_images. Also params and multiply-adds per 32x32 image
(torchinfo). Every config is timed in the same process, one after the other: compare the rows of
one run of this script, never figures from different machines or sittings.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torchinfo import summary  # noqa: E402

import model.metric as module_metric  # noqa: E402
from parse_config import ConfigParser, load_json  # noqa: E402
from trainer.batch_tricks import BatchTricks  # noqa: E402
from trainer.ema import build_ema  # noqa: E402
from trainer.loops import evaluate, train_one_epoch  # noqa: E402
from utils.cli import run_main  # noqa: E402


def synthetic(batches, batch_size, size=32, classes=10):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(batch_size, 3, size, size, generator=g), torch.randint(0, classes, (batch_size,), generator=g))
        for _ in range(batches)
    ]


def time_config(path, args):
    config = ConfigParser(load_json(path), run_id="bench")
    cfg, bs = config["trainer"], config["data_loader"]["args"]["batch_size"]
    torch.manual_seed(0)
    model = config.init_obj("arch")
    macs = summary(model, (1, 3, 32, 32), verbose=0).total_mult_adds
    if cfg["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    optimizer = config.init_obj("optimizer", [p for p in model.parameters() if p.requires_grad])
    criterion, metrics = config.init_obj("loss"), module_metric.build_metrics(config["metrics"])
    ema = build_ema(model, cfg["ema"])
    epochs = cfg["epochs"]
    tricks = (
        BatchTricks(cfg, 10, (32, 32), epochs)
        if any(cfg[k] for k in ("progressive_resize", "selective_backprop", "mix"))
        else None
    )
    data = synthetic(args.batches + 2, bs)
    per_size = {}
    seconds = []
    for epoch in range(1, epochs + 1):
        size = tricks.start_epoch(epoch).get("image_size", 32) if tricks else 32
        if size not in per_size:
            train_one_epoch(
                model,
                criterion,
                metrics,
                optimizer,
                data[:2],
                torch.device("cpu"),
                tricks=tricks,
                ema=ema,
                channels_last=cfg["channels_last"],
            )  # warm-up at this size
            start = time.perf_counter()
            train_one_epoch(
                model,
                criterion,
                metrics,
                optimizer,
                data[2:],
                torch.device("cpu"),
                tricks=tricks,
                ema=ema,
                channels_last=cfg["channels_last"],
            )
            per_size[size] = (time.perf_counter() - start) / (args.batches * bs)
        seconds.append(per_size[size] * args.train_images)
    valid = synthetic(max(1, args.valid_images // 500), 500)
    start = time.perf_counter()
    evaluate(
        ema.module if ema else model, criterion, metrics, valid, torch.device("cpu"), channels_last=cfg["channels_last"]
    )
    eval_s = (time.perf_counter() - start) * args.valid_images / (len(valid) * 500)
    train_s = sum(seconds) / len(seconds)
    return {
        "config": Path(path).stem,
        "params": model.num_params(),
        "macs_M": macs / 1e6,
        "train_s": train_s,
        "eval_s": eval_s,
        "epoch_s": train_s + eval_s,
    }


def main(args):
    torch.set_num_threads(args.threads or torch.get_num_threads())
    rows = [time_config(path, args) for path in args.config]
    print(f"threads {torch.get_num_threads()}; {args.train_images} training + {args.valid_images} validation images")
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
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return run_main(main, parser.parse_args(argv), single_process="step_benchmark.py")


if __name__ == "__main__":
    sys.exit(cli())
