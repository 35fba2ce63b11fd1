"""How much a network's validation accuracy depends on the training batches its BatchNorm statistics
are recomputed on (trainer.swa.bn_batches), from a checkpoint of its run:

    python -m benchmarks.swa_bn --resume <run>/last.pth --data_dir D [--batches 50] [--repeats 5]

Each of `repeats` draws of `batches` batches of the run's training loader (augmented and shuffled as
in training), and then one whole epoch of it, gives the checkpoint's weights statistics of their own
(trainer.swa.recompute_bn, as a run with trainer.swa does); the validation accuracy of each is
printed, beside the accuracy with the statistics the checkpoint holds."""

import argparse
import copy
import sys

if not __package__:  # run as a file, the project's packages are not importable
    sys.exit("run it from the repository root as a module: python -m benchmarks.swa_bn ...")

import torch

import model.metric as module_metric
from base.base_data_loader import close_workers
from config.overrides import add_override_flags, base_argparser
from deploy.loading import load_trained
from trainer import evaluate
from trainer.swa import recompute_bn
from utils.cli import run_main
from utils.errors import ConfigError


def accuracy_with_bn(model, train_loader, valid_loader, criterion, metrics, batches):
    """Validation accuracy of `model`'s weights with BatchNorm statistics from `batches` training
    batches (None: the whole loader; 0: the statistics it has)."""
    model = copy.deepcopy(model)
    if batches != 0:
        recompute_bn(model, train_loader, torch.device("cpu"), batches=batches)
    return evaluate(model, criterion, metrics, valid_loader, torch.device("cpu"))["accuracy"]


def main(args):
    torch.manual_seed(args.seed)
    config, _, model, data_loader = load_trained(args, split="run")
    valid_loader = data_loader.split_validation()
    if valid_loader is None:
        raise ConfigError(f"{args.resume}: its data has no validation or test split to measure on")
    criterion, metrics = config.init_obj("loss"), module_metric.build_metrics(["accuracy"])
    rows = [("as saved", accuracy_with_bn(model, data_loader, valid_loader, criterion, metrics, 0))]
    for draw in range(1, args.repeats + 1):
        acc = accuracy_with_bn(model, data_loader, valid_loader, criterion, metrics, args.batches)
        rows.append((f"{args.batches} batches, draw {draw}", acc))
    rows.append(
        (
            f"all {len(data_loader)} batches",
            accuracy_with_bn(model, data_loader, valid_loader, criterion, metrics, None),
        )
    )
    close_workers(data_loader)
    print("| BatchNorm statistics | val accuracy |\n|---|---|")
    for name, acc in rows:
        print(f"| {name} | {acc:.2f}% |")
    draws = [acc for name, acc in rows if "draw" in name]
    if draws:
        print(f"{args.batches} batches: {min(draws):.2f} to {max(draws):.2f}% over {len(draws)} draws")
    return rows


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def cli(argv=None):
    parser = base_argparser(__doc__.splitlines()[0])
    add_override_flags(parser, ("--data_dir", "--validation_split", "--num_workers"), generic=False)
    parser.add_argument("--batches", type=positive, default=50, help="training batches per draw (default 50)")
    parser.add_argument("--repeats", type=positive, default=5, help="draws of that many batches (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    return run_main(main, parser.parse_args(argv), single_process="swa_bn.py")


if __name__ == "__main__":
    sys.exit(cli())
