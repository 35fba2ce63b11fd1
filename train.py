"""Train a network as the config says:  python train.py -c config.json   (or -c config.yaml)
Continue a run:                          python train.py --resume saved/<name>/<run>/last.pth
The training itself is trainer/run.py; this is its command line."""

import sys

from deploy.cam import mistake_cams_for
from parse_config import ConfigParser
from trainer.run import main as train_main
from utils.cli import run_main
from utils.overrides import add_override_flags, base_argparser


def main(config, allow_spec_violation=False, epoch_callbacks=()):
    """trainer.run.main with the report's Grad-CAM pictures (deploy/ sits above trainer/)."""
    return train_main(config, allow_spec_violation, epoch_callbacks, mistake_cams=mistake_cams_for)


def cli(argv=None):
    parser = base_argparser("Train a compact dilated CNN on CIFAR-10")
    add_override_flags(parser)
    parser.add_argument(
        "--allow_spec_violation", action="store_true", help="train even if the network breaks the constraints section"
    )
    args = parser.parse_args(argv)
    return run_main(
        lambda: main(ConfigParser.from_args(args), args.allow_spec_violation),
        interrupted="interrupted before training started: nothing was written",
    )


if __name__ == "__main__":
    sys.exit(cli())
