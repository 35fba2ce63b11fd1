"""A trained network with its data, for test.py and report.py: `load_trained` (the network alone is
config/networks.py's `load_network`)."""

import copy
from pathlib import Path

from checkpoint.schema import (
    data_mismatch,
    load_checkpoint,
    saved_entries,
)
from config.networks import load_network
from config.overrides import overrides_from_args
from config.parser import ConfigParser, args_named
from config.reading import load_config
from data_loader.datasets import DEFAULT_ROOT
from utils.errors import CheckpointError, DataError


def config_from_checkpoint(args, ckpt):
    """The checkpoint's own config (or -c), with the command-line overrides applied. A data folder
    named only by the checkpoint is never downloaded into, except config.json's default data/: a
    checkpoint from elsewhere must not make test.py write into a folder it names."""
    config = load_config(args.config) if args.config else copy.deepcopy(ckpt["config"])
    data = config.get("data_loader", {}).get("args", {}) if isinstance(config.get("data_loader"), dict) else {}
    if not args.config and not getattr(args, "data_dir", None) and isinstance(data, dict):
        if Path(str(data.get("data_dir", DEFAULT_ROOT))).resolve() != DEFAULT_ROOT.resolve():
            data["download"] = False
    return ConfigParser(config, None, overrides_from_args(args))


def load_trained(args, split, ckpt=None):
    """(config, checkpoint, model on CPU with weights, data loader), through the data-loader contract
    of base.BaseDataLoader only. split "test": `Loader.for_test` (the test split, normalised with
    the checkpoint's statistics); "run": `Loader(**args)`, the run's own train/validation split."""
    if not args.resume:
        raise CheckpointError("no checkpoint given: use --resume <checkpoint.pth>")
    ckpt = ckpt if ckpt is not None else load_checkpoint(args.resume)
    config = config_from_checkpoint(args, ckpt)
    model, config, ckpt, *_ = load_network(args.resume, config, ckpt=ckpt)
    if split == "run":
        data_loader = config.init_obj("data_loader")
    else:
        with args_named("data_loader"):
            data_loader = config.obj_type("data_loader").for_test(
                config["data_loader"]["args"], saved_entries(ckpt).data_stats
            )
    saved = saved_entries(ckpt)
    problem = data_mismatch(saved.classes, saved.image_size, data_loader.classes, data_loader.image_size)
    if problem:
        raise DataError(f"{config['data_loader']['args']['data_dir']}: the checkpoint was {problem}")
    return config, ckpt, model, data_loader
