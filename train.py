"""Train a network as the config says:  python train.py -c config.json   (or -c config.yaml)
Continue a run:                          python train.py --resume saved/<name>/<run>/last.pth
The training itself is pipeline/training.py; this is its command line."""

import shutil
import sys
import tempfile

from parse_config import ConfigParser
from pipeline.training import main
from utils.cli import run_main
from utils.overrides import add_override_flags, base_argparser

# --fast_dev_run: one epoch of two training and two validation batches through every step of a run
FAST_DEV_RUN = {("trainer", "epochs"): 1, ("trainer", "limit_batches"): 2, ("trainer", "swa"): None}


def fast_dev_run(args):
    """Every step of a run (checks, data, network, spec, a training step, validation, checkpoints,
    TTA, the report) on two batches, in a temporary run folder that is removed at the end."""
    folder = tempfile.mkdtemp(prefix="fast_dev_run-")
    args.set = [*FAST_DEV_RUN.items(), (("trainer", "save_dir"), folder), *(args.set or [])]
    try:
        history = main(ConfigParser.from_args(args), args.allow_spec_violation)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"fast_dev_run: config, data, network and spec checks, {len(history)} epoch of 2 training and 2 validation "
        "batches, checkpoints, test-time augmentation and the report all ran; the run folder was temporary "
        "and is removed"
    )
    return history


def cli(argv=None):
    parser = base_argparser("Train a compact dilated CNN on CIFAR-10")
    add_override_flags(parser)
    parser.add_argument(
        "--allow_spec_violation", action="store_true", help="train even if the network breaks the constraints section"
    )
    parser.add_argument(
        "--fast_dev_run",
        action="store_true",
        help="check the whole pipeline in seconds: 2 training and 2 validation batches, a temporary run folder",
    )
    args = parser.parse_args(argv)
    if args.fast_dev_run:
        if args.resume:
            parser.error("--fast_dev_run starts a new run; it cannot be combined with --resume")
        return run_main(lambda: fast_dev_run(args), interrupted="interrupted: the temporary run folder is removed")
    return run_main(
        lambda: main(ConfigParser.from_args(args), args.allow_spec_violation),
        interrupted="interrupted before training started: nothing was written",
    )


if __name__ == "__main__":
    sys.exit(cli())
