"""Command-line flags that override config keys (`--lr` -> optimizer.args.lr, ...), shared by the
scripts."""

import argparse


def parse_number(text):
    """'5000' -> 5000, '0.1' -> 0.1 (for --validation_split)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


# Command-line overrides: flag -> (type, path of the key in the config).
OVERRIDES = {
    "--lr": (float, ("optimizer", "args", "lr")),
    "--bs": (int, ("data_loader", "args", "batch_size")),
    "--epochs": (int, ("trainer", "epochs")),
    "--data_dir": (str, ("data_loader", "args", "data_dir")),
    "--validation_split": (parse_number, ("data_loader", "args", "validation_split")),
    "--train_subset": (int, ("data_loader", "args", "train_subset")),
    "--num_workers": (int, ("data_loader", "args", "num_workers")),
    "--seed": (int, ("seed",)),
    "--device": (str, ("device",)),
    "--save_dir": (str, ("trainer", "save_dir")),
}


def overrides_from_args(args):
    """{path in the config: value} for every override flag given on the command line."""
    values = {path: getattr(args, flag.lstrip("-"), None) for flag, (_, path) in OVERRIDES.items()}
    return {path: value for path, value in values.items() if value is not None}


def add_override_flags(parser, flags=tuple(OVERRIDES)):
    for flag in flags:
        kind, path = OVERRIDES[flag]
        parser.add_argument(flag, type=kind, default=None, help=f"override {'.'.join(path)}")


def base_argparser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", default=None, help="config file path (default: the checkpoint's config)")
    parser.add_argument("-r", "--resume", default=None, help="path of a checkpoint to resume from")
    return parser
