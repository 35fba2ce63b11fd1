"""Resume policy: what a resumed run may change, and every check of a checkpoint before a resume
loads it (the checkpoint's schema is checkpoint/schema.py's); and the weights a new run starts from
(trainer.init)."""

import logging
import shlex

from checkpoint.schema import data_mismatch, is_full, keys_of, load_checkpoint, load_model_state, saved_entries
from utils.errors import CheckpointError, ConfigError
from utils.paths import file_sha256

# config keys a resumed run may change: where files go and how much is printed, not what is trained
MAY_DIFFER_ON_RESUME = {
    "name",
    "device",
    "trainer.save_dir",
    "trainer.save_period",
    "trainer.verbosity",
    "trainer.tensorboard",
    "trainer.report",
    "trainer.epochs",
    "trainer.early_stop",
    "trainer.dist_timeout",
    "data_loader.args.data_dir",
    "data_loader.args.num_workers",
    "data_loader.args.pin_memory",
    "data_loader.args.download",
}


def _flatten(tree, prefix=""):
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def config_changes(saved, now):
    """[(key path, saved value, new value)] of the keys a resumed run may not change. A key the saved
    config has off (null or false) and the new one lacks is an option removed since (config.schema.RETIRED),
    not a change."""
    was, new = _flatten(saved), _flatten(now)
    retired = {k for k, v in was.items() if k not in new and v in (None, False)}
    keys = sorted(
        k for k in was.keys() | new.keys() if was.get(k) != new.get(k) and k not in MAY_DIFFER_ON_RESUME | retired
    )
    return [(k, was.get(k), new.get(k)) for k in keys]


def show_changes(changes, first=3):
    """config_changes' list, for a one-line message: `key: was -> new; ...` (the first few, then a count)."""
    shown = "; ".join(f"{k}: {was!r} -> {new!r}" for k, was, new in changes[:first])
    return shown + (f" and {len(changes) - first} more" if len(changes) > first else "")


def require_full(saved, path):
    """A resume needs a full checkpoint: said first, before the data is read (train.py --resume)."""
    if not is_full(saved):
        missing = ", ".join(key for key in keys_of("resume") if key not in saved)
        raise CheckpointError(
            f"{path}: a weights-only checkpoint (no {missing}) cannot be resumed; "
            "evaluate it with test.py, or resume from the run's last.pth"
        )


def check_resumable(saved, now, path):
    """Every check of a resume, before anything is loaded: `saved` is the checkpoint, `now` the one
    this run would write (make_checkpoint's entries). One line per problem; returns the warnings.
    The kinds of the entries were checked when the file was loaded (checkpoint.schema.check_contents)."""
    require_full(saved, path)
    for key in ("epoch", "monitor_best"):
        if saved.get(key) is None:
            raise CheckpointError(f"{path}: its {key!r} is missing or of the wrong type (NoneType)")
    _check_recipe(saved["config"], now["config"], path)
    _check_processes(saved.get("world_size", 1), now["world_size"], path)
    _check_schedule_length(saved, now, path)
    was_teacher, now_teacher = saved.get("teacher_sha256"), now.get("teacher_sha256")
    if was_teacher and now_teacher and was_teacher != now_teacher:
        raise CheckpointError(
            f"{path}: was distilled from a teacher file with sha256 {was_teacher[:12]}..., trainer.distill.teacher "
            f"now has {now_teacher[:12]}...; resume with the teacher file the run started with"
        )
    problem = data_mismatch(saved.get("classes"), None, now["classes"], None)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    if saved.get("data_stats") and saved["data_stats"] != now["data_stats"]:
        return ["the data's mean/std differ from the checkpoint's: was the data or the validation split changed?"]
    return []


def _check_recipe(was_config, config, path):
    """The same optimizer, schedule, learning rate and every key a resume may not change."""
    for section in ("optimizer", "lr_scheduler"):
        was, new = (was_config.get(section) or {}).get("type"), (config[section] or {}).get("type")
        if was != new:
            raise CheckpointError(
                f"{path}: trained with {section} {was}, the config says {new}; a resumed run "
                "continues its own optimizer and schedule: start a new run to change them"
            )
    was_lr, now_lr = (
        (was_config.get("optimizer") or {}).get("args", {}).get("lr"),
        config["optimizer"]["args"].get("lr"),
    )
    if was_lr != now_lr:
        raise ConfigError(
            f"optimizer.args.lr (--lr): {now_lr} differs from the checkpoint's {was_lr}; a resumed "
            "run continues its schedule as saved: start a new run to change the learning rate"
        )
    changes = config_changes(was_config, config)
    if changes:
        raise ConfigError(
            f"{path}: the config differs from the one this run was trained with ({show_changes(changes)}); a resumed "
            "run continues as it was trained: resume without -c, or start a new run with the new config"
        )


def _check_processes(was, world, path):
    """The same number of processes: the data order and the batch split depend on it."""
    if was != world:
        how = (
            "python train.py"
            if was == 1
            else f"torchrun --nproc_per_node={was} train.py (or as many processes over several machines)"
        )
        raise CheckpointError(
            f"{path}: trained with {was} process(es), this run has {world}; the data order "
            f"and the batch split depend on it: resume with {how}"
        )


def _check_schedule_length(saved, now, path):
    """A per-batch schedule of another length is another schedule (other epochs, batch size or data)."""
    was_steps = (saved.get("lr_scheduler") or {}).get("total_steps")
    now_steps = (now["lr_scheduler"] or {}).get("total_steps")
    if was_steps is not None and now_steps is not None and was_steps != now_steps:
        config = now["config"]
        raise ConfigError(
            f"trainer.epochs: the checkpoint's {config['lr_scheduler']['type']} schedule has {was_steps} steps, "
            f"this run's would have {now_steps}: a resume keeps the epochs, batch size and data it started with; "
            "to train on from its weights, start a new run:  python train.py -c <config> --set "
            f"trainer.init={shlex.quote(str(path))}"
        )


def start_weights(model, path, data_classes):
    """trainer.init: load the weights of the file at `path` (a full checkpoint or an export of the same
    network, trained on the classes `data_classes`) into `model`. A missing file, one of another
    network or of other classes is one line."""
    ckpt = load_checkpoint(path)
    load_model_state(model, ckpt, path)
    problem = data_mismatch(saved_entries(ckpt).classes, None, data_classes, None)
    if problem:
        raise ConfigError(f"trainer.init: {path} was {problem}")
    logging.getLogger("train").info(
        f"Weights: start from {path} (sha256 {file_sha256(path)[:12]}..., epoch {saved_entries(ckpt).epoch} of its run)"
    )
