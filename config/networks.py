"""A trained network from its checkpoint, for everything that uses one (the predictor, the ONNX
export, test.py, report.py, the tools, a distillation teacher): built from the checkpoint's own config
(or a given one) as the config package builds any object, its weights loaded."""

from typing import NamedTuple

from checkpoint.schema import check_network_fits, image_size_of, load_checkpoint, load_model_state, saved_entries
from config.parser import ConfigParser
from utils.errors import CheckpointError, ConfigError
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


def load_teacher(trainer_cfg):
    """(the teacher network of trainer.distill, in eval mode on the CPU, its file's sha256), or None
    when distillation is off. One line for a missing or unreadable file."""
    cfg = trainer_cfg.get("distill")
    if not cfg:
        return None
    return load_network(cfg["teacher"], require=("data_stats", "classes")), file_sha256(cfg["teacher"])
