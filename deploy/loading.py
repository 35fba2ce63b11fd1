"""A trained network from its checkpoint, for everything that uses one: `load_network` (the
predictor, the ONNX export, test.py, report.py, the tools) and `load_trained`, which adds the data
(test.py, report.py)."""

import copy
from pathlib import Path
from typing import NamedTuple

from checkpoint.schema import (
    check_network_fits,
    data_mismatch,
    image_size_of,
    load_checkpoint,
    load_model_state,
    saved_entries,
)
from config.overrides import overrides_from_args
from config.parser import ConfigParser, args_named
from config.reading import load_config
from data_loader.datasets import DEFAULT_ROOT
from utils.errors import CheckpointError, ConfigError, DataError
from utils.paths import file_sha256


class Trained(NamedTuple):
    """A network as its checkpoint describes it: weights loaded, on the CPU, in eval mode."""

    model: object
    config: ConfigParser
    ckpt: dict
    stats: dict | None  # {"mean": [...], "std": [...]} the network's inputs were normalised with
    classes: list
    image_size: tuple


def load_network(path, config=None, require=(), ckpt=None):
    """The network saved in the checkpoint at `path`, built from `config` (a ConfigParser; default:
    the checkpoint's own config), in eval mode.
    require: entries ("data_stats", "classes") the caller cannot work
    without; a checkpoint without them is one line. ckpt: the file already loaded (load_checkpoint)."""
    ckpt = ckpt if ckpt is not None else load_checkpoint(path)
    saved = saved_entries(ckpt)
    for key in require:
        if not getattr(saved, key):
            raise CheckpointError(f"{path}: has no {key!r}; it predates them: export it again from its run")
    try:
        config = config or ConfigParser(saved.config)
        check_network_fits(config, saved, path)  # before any memory is allocated for the network
        model = config.init_obj("arch")
    except ConfigError as e:  # the file's own config: name the file
        if str(e).startswith(str(path)):
            raise
        raise CheckpointError(f"{path}: its config's {e}") from None
    size = image_size_of(saved)
    load_model_state(model, ckpt, path)
    return Trained(model.eval(), config, ckpt, saved.data_stats, list(saved.classes or []), size)


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


def load_teacher(trainer_cfg):
    """(the teacher network of trainer.distill, in eval mode on the CPU, its file's sha256), or None
    when distillation is off. One line for a missing or unreadable file."""
    cfg = trainer_cfg.get("distill")
    if not cfg:
        return None
    return load_network(cfg["teacher"], require=("data_stats", "classes")), file_sha256(cfg["teacher"])
