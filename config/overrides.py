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


def parse_set(text):
    """--set key.path=value -> ((key, path), value): the value is read as JSON (5, 0.1, true, null,
    [1, 2], {"decay": 0.99}) and otherwise kept as a string; the config schema checks its type."""
    import json

    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise argparse.ArgumentTypeError(f"{text!r}: expected key.path=value, e.g. trainer.epochs=30")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return tuple(key.split(".")), value


def overrides_from_args(args):
    """{path in the config: value} for every override flag given on the command line (--set ones
    first, so that a named flag wins)."""
    values = dict(getattr(args, "set", None) or [])
    for flag, (_, path) in OVERRIDES.items():
        if getattr(args, flag.lstrip("-"), None) is not None:
            values[path] = getattr(args, flag.lstrip("-"))
    return values


def add_override_flags(parser, flags=tuple(OVERRIDES), generic=True):
    for flag in flags:
        kind, path = OVERRIDES[flag]
        parser.add_argument(flag, type=kind, default=None, help=f"override {'.'.join(path)}")
    if generic:
        parser.add_argument(
            "--set",
            type=parse_set,
            action="append",
            metavar="KEY.PATH=VALUE",
            help="override any config key, e.g. --set trainer.ema='{\"decay\": 0.99}' (value as JSON, else a string)",
        )


def base_argparser(description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-c", "--config", default=None, help="config file path (default: the checkpoint's config)")
    parser.add_argument("-r", "--resume", default=None, help="path of a checkpoint to resume from")
    return parser


# --fast_dev_run: one epoch of two training and two validation batches through every step of a run, at a
# constant learning rate (two steps are no schedule: OneCycleLR's warm-up alone needs more)
FAST_DEV_RUN = {
    ("trainer", "epochs"): 1,
    ("trainer", "limit_batches"): 2,
    ("trainer", "swa"): None,
    ("lr_scheduler",): None,
}
FAST_READ = 2048  # images of each split a fast_dev_run decodes, where the data loader can limit it


def fast_read(config):
    """--fast_dev_run's quick read for a ConfigParser: {key path: value} that make its data loader
    decode FAST_READ images of each split (read_limit: seconds instead of a minute for CIFAR-10's
    archive) and keep a validation count within them; {} for a loader without read_limit."""
    import inspect

    loader_type, loader_args = config.obj_type("data_loader"), config["data_loader"]["args"]
    if "read_limit" not in inspect.signature(loader_type).parameters or loader_args.get("read_limit"):
        return {}
    quick = {("data_loader", "args", "read_limit"): FAST_READ}
    split = loader_args.get("validation_split", 0)
    if isinstance(split, int) and not isinstance(split, bool) and split > FAST_READ // 4:
        quick[("data_loader", "args", "validation_split")] = FAST_READ // 4
    return quick


FAST_DEV_RUN_DONE = (  # what it says at the end
    "fast_dev_run: every step of a run ran on {} epoch of 2 training and 2 validation batches (at a constant lr); "
    "its temporary run folder (checkpoints, report) is removed"
)


def train_argparser():
    """train.py's flags: -c / --resume, the overrides, --allow_spec_violation and --fast_dev_run."""
    parser = base_argparser("Train a compact dilated CNN on CIFAR-10")
    add_override_flags(parser)
    parser.add_argument(
        "--allow_spec_violation", action="store_true", help="train even if the network breaks the constraints section"
    )
    parser.add_argument(
        "--fast_dev_run", action="store_true", help="check the whole pipeline on 2 training and 2 validation batches"
    )
    return parser
