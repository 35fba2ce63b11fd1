"""Checkpoints: their one schema (what a full checkpoint and an export hold, and what a resume
checks), written atomically (temp file in the same folder, then rename) and read back with
`torch.load(weights_only=True)`, so a checkpoint holds only tensors and plain Python values."""

import contextlib
import pickle
import random
import re
import signal
import threading
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from utils.errors import CheckpointError, ConfigError
from utils.paths import atomic_write

# What a checkpoint holds. A full checkpoint (last.pth, model_best.pth, checkpoint-epochN.pth) has
# every key of WEIGHTS_ONLY and RESUME_ONLY, and EMA_ONLY's when trainer.ema or trainer.swa averaged the
# weights (its state_dict is then the average; ema_updates counts the updates of either); an export
# (export.py) keeps WEIGHTS_ONLY: all that test.py, report.py, predict.py and export.py read.
WEIGHTS_ONLY = (
    "format_version",
    "epoch",
    "state_dict",
    "config",
    "history",
    "data_stats",
    "classes",
    "image_size",
    "monitor_best",
)
RESUME_ONLY = ("optimizer", "rng", "lr_scheduler", "scaler", "world_size")
EMA_ONLY = ("raw_state_dict", "ema_updates")
LOOKAHEAD_ONLY = ("lookahead",)  # when trainer.lookahead is on: the slow weights and the step count
DISTILL_ONLY = ("teacher_sha256",)  # when trainer.distill is on: the teacher file's sha256

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


# The version of the schema above that this code writes. A file without the key is older than the
# key (version 0: the same entries, all readable); one of a later version is refused in one line.
FORMAT_VERSION = 1


class Saved(NamedTuple):
    """A checkpoint's entries, read one way (`read`): what the schema above names, None where the
    file has no such entry (an export has no optimizer, a run without EMA no raw_state_dict)."""

    format_version: int = 0
    epoch: int | None = None
    state_dict: dict | None = None
    config: dict | None = None
    history: list | None = None
    data_stats: dict | None = None
    classes: list | None = None
    image_size: list | None = None
    monitor_best: float | None = None
    optimizer: dict | None = None
    rng: dict | None = None
    lr_scheduler: dict | None = None
    scaler: dict | None = None
    world_size: int | None = None
    raw_state_dict: dict | None = None
    ema_updates: object = None
    lookahead: dict | None = None
    teacher_sha256: str | None = None


def read(ckpt):
    """The entries of a loaded checkpoint (load_checkpoint) as a Saved."""
    return Saved(**{key: ckpt[key] for key in Saved._fields if key in ckpt})


def make_checkpoint(**entries):
    """A full checkpoint: exactly the keys of the schema above (a missing or unknown one is a bug);
    format_version is filled in."""
    entries = {"format_version": FORMAT_VERSION, **entries}
    required = {*WEIGHTS_ONLY, *RESUME_ONLY}
    allowed = {*required, *EMA_ONLY, *LOOKAHEAD_ONLY, *DISTILL_ONLY}
    missing, unknown = required - entries.keys(), entries.keys() - allowed
    if missing or unknown:
        raise TypeError(f"checkpoint schema: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return entries


def weights_only(ckpt):
    """The export of a checkpoint: its WEIGHTS_ONLY entries."""
    return {key: ckpt[key] for key in WEIGHTS_ONLY if key in ckpt}


def _flatten(tree, prefix=""):
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def config_changes(saved, now):
    """[(key path, saved value, new value)] of the keys a resumed run may not change."""
    was, new = _flatten(saved), _flatten(now)
    keys = sorted(k for k in was.keys() | new.keys() if was.get(k) != new.get(k) and k not in MAY_DIFFER_ON_RESUME)
    return [(k, was.get(k), new.get(k)) for k in keys]


def show_changes(changes, first=3):
    """config_changes' list, for a one-line message: `key: was -> new; ...` (the first few, then a count)."""
    shown = "; ".join(f"{k}: {was!r} -> {new!r}" for k, was, new in changes[:first])
    return shown + (f" and {len(changes) - first} more" if len(changes) > first else "")


def is_full(ckpt):
    """A full checkpoint (what a resume needs) holds every entry of RESUME_ONLY; an export none."""
    return all(key in ckpt for key in RESUME_ONLY)


def require_full(saved, path):
    """A resume needs a full checkpoint: said first, before the data is read (train.py --resume)."""
    if not is_full(saved):
        missing = ", ".join(key for key in RESUME_ONLY if key not in saved)
        raise CheckpointError(
            f"{path}: a weights-only checkpoint (no {missing}) cannot be resumed; "
            "evaluate it with test.py, or resume from the run's last.pth"
        )


def check_resumable(saved, now, path):
    """Every check of a resume, before anything is loaded: `saved` is the checkpoint, `now` the one
    this run would write (make_checkpoint's entries). One line per problem; returns the warnings."""
    require_full(saved, path)
    expected = {"epoch": int, "optimizer": dict, "rng": dict, "monitor_best": (int, float), "config": dict}
    for key, kind in expected.items():
        if key not in saved or not isinstance(saved[key], kind) or isinstance(saved[key], bool):
            raise CheckpointError(
                f"{path}: its {key!r} is missing or of the wrong type ({type(saved.get(key)).__name__})"
            )
    was_config, config = saved["config"], now["config"]
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
    was, world = saved.get("world_size", 1), now["world_size"]
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
    was_steps = (saved.get("lr_scheduler") or {}).get("total_steps")
    now_steps = (now["lr_scheduler"] or {}).get("total_steps")
    if was_steps is not None and now_steps is not None and was_steps != now_steps:
        epochs = config["trainer"]["epochs"]  # a per-batch schedule with other steps is another schedule
        raise ConfigError(
            f"trainer.epochs: the checkpoint's {config['lr_scheduler']['type']} schedule has {was_steps} steps, "
            f"this run's {now_steps} ({epochs} epochs x {now_steps // epochs} batches); resume with the same "
            "epochs, batch size and data"
        )
    was_teacher, now_teacher = saved.get("teacher_sha256"), now.get("teacher_sha256")
    if was_teacher and now_teacher and was_teacher != now_teacher:
        raise CheckpointError(
            f"{path}: was distilled from a teacher file with sha256 {was_teacher[:12]}..., trainer.distill.teacher "
            f"now has {now_teacher[:12]}...; resume with the teacher file the run started with"
        )
    if saved.get("classes") and list(saved["classes"]) != list(now["classes"]):
        raise CheckpointError(f"{path}: trained on classes {saved['classes']}, the data holds {now['classes']}")
    warnings = []
    if saved.get("data_stats") and saved["data_stats"] != now["data_stats"]:
        warnings.append(
            "the data's mean/std differ from the checkpoint's: was the data or the validation split changed?"
        )
    return warnings


def save_atomic(obj, path):
    """torch.save to a temp file beside `path`, fsync, then rename over `path`: a reader never sees
    half a file, and a run killed while saving leaves the previous checkpoint intact."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


@contextlib.contextmanager
def interrupts_deferred():
    """Hold back Ctrl-C (SIGINT) and SIGTERM for the duration of the block and deliver them at the
    end, to the handlers that were in place: a save is never cut off half-way (in the main
    thread; elsewhere signals cannot be handled anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in held}
    try:
        yield
    finally:
        for s in held:
            signal.signal(s, previous[s])
        for s in dict.fromkeys(received):
            signal.raise_signal(s)


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint safely; any failure is a one-line CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save: a zip, or a legacy pickle
        raise CheckpointError(f"{path}: not a checkpoint (not a file written by torch.save)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", str(e))  # torch's two wordings
        if found:  # torch's advice (retry with weights_only=False) is the wrong advice for an untrusted file
            raise CheckpointError(
                f"{path}: refused: it holds a Python object ({found.group(1)}), which a checkpoint of "
                "this project never does, and loading it could run arbitrary code"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (not a torch.save file, or damaged)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a checkpoint of this project (no state_dict/config)")
    version = ckpt.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version!r}, which this code does not know (it reads formats 0 to "
            f"{FORMAT_VERSION}): it was written by a newer version of the project; update the code"
        )
    check_contents(ckpt, path)
    return ckpt


DEFAULT_IMAGE_SIZE = (32, 32)  # for checkpoints written before they recorded their image size
MAX_IMAGE_SIDE = 4096  # an image size beyond this in a checkpoint is damage, not a network of this project


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _stats_problem(stats):
    if not isinstance(stats, dict) or not all(isinstance(stats.get(k), (list, tuple)) for k in ("mean", "std")):
        return "not {'mean': [...], 'std': [...]}"
    mean, std = stats["mean"], stats["std"]
    if not mean or len(mean) != len(std) or not all(_number(v) and np.isfinite(v) for v in (*mean, *std)):
        return "not two equally long lists of finite numbers"
    if min(std) <= 0:
        return f"a std of {min(std)} (inputs are divided by it)"
    return None


# entry -> (a test of its value, what it should be); None values pass (an entry the file does not need)
CONTENTS = {
    "epoch": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an epoch number >= 0"),
    "state_dict": (
        lambda v: isinstance(v, dict) and all(isinstance(k, str) and torch.is_tensor(t) for k, t in v.items()),
        "a mapping of names to tensors",
    ),
    "config": (lambda v: isinstance(v, dict), "an object"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v), "a list of epoch logs"),
    "data_stats": (lambda v: _stats_problem(v) is None, "{'mean': [...], 'std': [...]} with every std > 0"),
    "classes": (
        lambda v: isinstance(v, (list, tuple)) and v and all(isinstance(c, str) for c in v) and len(set(v)) == len(v),
        "a list of distinct class names",
    ),
    "image_size": (
        lambda v: (
            isinstance(v, (list, tuple))
            and len(v) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_IMAGE_SIDE for n in v)
        ),
        f"[height, width], each from 1 to {MAX_IMAGE_SIDE}",
    ),
    "monitor_best": (_number, "a number"),
    "optimizer": (
        lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("state"), dict)
            and isinstance(v.get("param_groups"), list)
            and len(v["param_groups"]) > 0
            and all(isinstance(g, dict) for g in v["param_groups"])
        ),
        "an optimizer state with its parameter groups",
    ),
    "rng": (
        lambda v: isinstance(v, dict) and {"torch", "numpy", "python"} <= v.keys(),
        "torch, numpy and python states",
    ),
    "world_size": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a process count >= 1"),
    "raw_state_dict": (lambda v: isinstance(v, dict), "a mapping of names to tensors"),
    "lr_scheduler": (lambda v: isinstance(v, dict), "a scheduler state"),
    "scaler": (lambda v: isinstance(v, dict), "a gradient scaler state"),
    "lookahead": (lambda v: isinstance(v, dict), "the slow weights and their step count"),
}


def check_contents(ckpt, path):
    """Each entry of a loaded checkpoint is of the kind this code writes (types, shapes, ranges):
    a damaged or crafted file is one line naming the entry, not a traceback somewhere later."""
    for key, (ok, expected) in CONTENTS.items():
        value = ckpt.get(key)
        if value is None or ok(value):
            continue
        detail = _stats_problem(value) if key == "data_stats" else None
        shown = detail or (repr(value)[:60] if not isinstance(value, (dict, list)) else type(value).__name__)
        raise CheckpointError(f"{path}: its {key!r} is not {expected} (found {shown}); the file is damaged")


def check_arch_type(ckpt, model, path):
    """The checkpoint was saved from a network of `model`'s class."""
    saved_arch = ckpt["config"].get("arch", {})
    if saved_arch.get("type") != type(model).__name__:
        raise CheckpointError(
            f"{path}: saved from arch {saved_arch.get('type')!r}, but the config builds {type(model).__name__!r}"
        )


def check_network_fits(config, saved, size, path):
    """Build the network on the meta device (no memory) and compare it with the saved weights and
    classes: a config that asks for a far bigger network than the file holds (a damaged or crafted
    checkpoint) is one line, not gigabytes allocated."""
    with torch.device("meta"):
        meta = config.init_obj("arch")
        outputs = meta.eval()(torch.zeros(1, 3, *size)).shape[-1]
    check_arch_type({"config": saved.config}, meta, path)
    want = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in saved.state_dict.items()}
    if want != have:
        odd = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        raise CheckpointError(
            f"{path}: weights do not fit the model {type(meta).__name__} "
            f"({config['arch'].get('args', {})}): {odd[0]} is {have.get(odd[0])} in the file, "
            f"{want.get(odd[0])} in the network" + (f", and {len(odd) - 1} more" if len(odd) > 1 else "")
        )
    if saved.classes and len(saved.classes) != outputs:
        raise CheckpointError(
            f"{path}: names {len(saved.classes)} classes, but its network has {outputs} outputs; the file is damaged"
        )


def load_model_state(model, ckpt, path):
    """Load weights, turning an architecture mismatch (another class, or other shapes) into one
    readable line."""
    check_arch_type(ckpt, model, path)
    saved_arch = ckpt["config"].get("arch", {})
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(
            f"{path}: weights do not fit the model {type(model).__name__} "
            f"(checkpoint arch: {saved_arch.get('type')} {saved_arch.get('args', {})}; {detail[:200]})"
        ) from None


def get_rng_state():
    """All random states that decide the next epoch, as weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
