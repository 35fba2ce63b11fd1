"""Learning-rate range test:  python lr_find.py -c config.json [--steps 100] [--out lr_find.png]

Trains a fresh network of the config for --steps batches while the learning rate grows from
--start_lr to --end_lr, plots the smoothed loss against the learning rate and prints a suggested
OneCycle peak (`optimizer.args.lr`): the learning rate of the lowest loss (see suggest_lr)."""

import startup  # noqa: F401  (first: a Ctrl-C while the modules below load is one line, not a traceback)

# isort: split
import sys
from pathlib import Path

from config.overrides import add_override_flags, base_argparser
from config.parser import ConfigParser
from logger import get_logger, setup_logging
from trainer.lr_finder import lr_range_test, plot_lr_range, suggest_lr
from trainer.precision import autocast_of, resolve_amp
from trainer.progress import Progress
from utils import ConfigError, resolve_device, seed_everything
from utils.cli import run_main
from utils.paths import atomic_write, check_writable


def main(config, args):
    setup_logging(None, 1)
    logger = get_logger("lr_find")
    out = checked_out(config, args)
    seed_everything(config["seed"])
    device = resolve_device(config["device"])
    data_loader = config.init_obj("data_loader")
    model = config.init_obj("arch").to(device)
    channels_last = config["trainer"]["channels_last"]
    if channels_last:
        import torch

        model = model.to(memory_format=torch.channels_last)
    optimizer = config.init_obj("optimizer", model.parameters())
    dtype, why = resolve_amp(device, config["trainer"]["amp"])
    logger.info(
        f"LR range test: {args.steps} batches of {data_loader.batch_sampler.batch_size}, lr {args.start_lr:g} -> "
        f"{args.end_lr:g}, {config['optimizer']['type']} with the config's other settings; {why}"
    )
    lrs, losses = lr_range_test(
        model,
        config.init_obj("loss"),
        optimizer,
        data_loader,
        device,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        num_steps=args.steps,
        autocast=autocast_of(device, dtype),
        channels_last=channels_last,
        progress=Progress(args.steps, "LR range test", logger=logger),  # a line every 30 s when logged to a file
    )
    try:
        suggestion = suggest_lr(lrs, losses)
    except ValueError as e:
        raise ConfigError(f"--steps: {e}") from None
    with atomic_write(out) as tmp:
        plot_lr_range(lrs, losses, suggestion, tmp)
    stopped = f"; stopped at lr {lrs[-1]:.3g} as the loss diverged" if len(lrs) < args.steps else ""
    logger.info(
        f"Steepest fall at lr {suggestion['steepest']:.3g}; lowest loss at lr {suggestion['minimum']:.3g}{stopped}"
    )
    logger.info(
        f"Suggested OneCycle peak (optimizer.args.lr): {suggestion['peak']:.3g}, or {suggestion['steepest']:.3g} "
        f"to be cautious (config has {config['optimizer']['args'].get('lr')}); plot: {out}"
    )


def checked_out(config, args):
    """The picture's path, once the flags are checked and its folder is writable (before any step)."""
    if not 0 < args.start_lr < args.end_lr:
        raise ConfigError(f"--start_lr/--end_lr: expected 0 < start < end, got {args.start_lr} and {args.end_lr}")
    if args.steps < 10:
        raise ConfigError(f"--steps: expected at least 10, got {args.steps}")
    out = Path(args.out) if args.out else Path(config["trainer"]["save_dir"]) / config["name"] / "lr_find.png"
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {args.out}: expected a .png file name")
    check_writable(args.out or out)
    return out


def cli(argv=None):
    parser = base_argparser("Learning-rate range test")
    add_override_flags(
        parser,
        (
            "--bs",
            "--data_dir",
            "--validation_split",
            "--train_subset",
            "--num_workers",
            "--seed",
            "--device",
            "--save_dir",
        ),
    )
    parser.add_argument("--start_lr", type=float, default=1e-4)
    parser.add_argument("--end_lr", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=100, help="batches, one learning rate each")
    parser.add_argument("--out", default=None, help="PNG path (default: <save_dir>/<name>/lr_find.png)")
    args = parser.parse_args(argv)
    return run_main(lambda: main(ConfigParser.from_args(args), args), single_process="lr_find.py")


if __name__ == "__main__":
    sys.exit(cli())
