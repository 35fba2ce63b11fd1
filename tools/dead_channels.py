"""Dead channels of a trained network, per BatchNorm (model/dead_channels.py):

    python -m tools.dead_channels --resume pretrained/cifar10_dilatednet.pth

A channel whose BatchNorm running variance is below 1e-6 was constant over the training images: its
ReLU never fired, and the width it costs does no work."""

import argparse
import sys

if not __package__:  # run as a file, the project's packages are not importable
    sys.exit("run it from the repository root as a module: python -m tools.dead_channels ...")

from config.networks import load_network
from model.dead_channels import dead_channels, format_dead_channels
from utils.cli import run_main


def main(args):
    print(format_dead_channels(dead_channels(load_network(args.resume).model)))


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--resume", required=True, help="a checkpoint (full or weights only)")
    return run_main(main, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
