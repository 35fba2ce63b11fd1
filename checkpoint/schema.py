"""Checkpoints: their one schema (what a full checkpoint and an export hold, and what a resume
checks), written atomically (temp file in the same folder, then rename) and read back with
`torch.load(weights_only=True)`, so a checkpoint holds only tensors and plain Python values."""

import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from utils.errors import CheckpointError

# What a checkpoint holds: ENTRIES, one row per key (below, after its validators). A full checkpoint
# (last.pth, model_best.pth, checkpoint-epochN.pth) has every "weights" and "resume" entry, plus the
# "averaging" ones when trainer.ema or trainer.swa averaged the weights (its state_dict is then the
# average; ema_updates counts the updates of either), "distill" with trainer.distill, and "lookahead" in
# files written while trainer.lookahead existed (read and checked, no longer written); an export
# (export.py) keeps the "weights" entries: all that test.py, report.py, predict.py and export.py read.


class Saved:
    """A checkpoint's entries (the plain dict load_checkpoint returns, or one the code has built) read
    as attributes: each key of ENTRIES, None where the file has none (an export has no optimizer, a
    run without averaging no raw_state_dict). A view: nothing is copied. The dict stays plain, so a
    checkpoint loaded, changed and saved again still loads with weights_only=True."""

    __slots__ = ("_entries",)

    def __init__(self, entries):
        self._entries = entries

    def __getattr__(self, key):
        if key not in ENTRIES:
            raise AttributeError(key)
        return self._entries.get(key, 0 if key == "format_version" else None)


def saved_entries(ckpt):
    """The entries of a loaded checkpoint (load_checkpoint) as attributes (Saved)."""
    return Saved(ckpt)


# The version of the schema (ENTRIES) that this code writes. A file without the key is older than the
# key (version 0: the same entries, all readable); one of a later version is refused in one line.
FORMAT_VERSION = 1


def keys_of(*roles):
    """The entries of ENTRIES with one of `roles` ("weights", "resume", "averaging", "lookahead", "distill")."""
    return tuple(key for key, entry in ENTRIES.items() if entry.role in roles)


def make_checkpoint(**entries):
    """A full checkpoint: exactly the keys of the schema above (a missing or unknown one is a bug);
    format_version is filled in."""
    entries = {"format_version": FORMAT_VERSION, **entries}
    required, allowed = set(keys_of("weights", "resume")), set(ENTRIES)
    missing, unknown = required - entries.keys(), entries.keys() - allowed
    if missing or unknown:
        raise TypeError(f"checkpoint schema: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return entries


def weights_only(ckpt):
    """The export of a checkpoint: its "weights" entries, and the sha256 of the teacher it learnt from."""
    return {key: ckpt[key] for key in keys_of("weights", "distill") if key in ckpt}


def is_full(ckpt):
    """A full checkpoint (what a resume needs) holds every "resume" entry; an export none."""
    return all(key in ckpt for key in keys_of("resume"))


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint safely (a plain dict of the entries of ENTRIES, each of the kind this code
    writes; `saved_entries` gives them as attributes); any failure is a one-line CheckpointError naming the
    file. A command reads a file once and passes the dict on."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give a checkpoint file in it (e.g. {path / 'last.pth'})")
    if path.is_symlink() and not path.exists():
        raise CheckpointError(f"{path}: a link that leads nowhere (broken, or a loop), so not a checkpoint")
    if path.exists() and not path.is_file():
        raise CheckpointError(f"{path}: is not a regular file (a device or a pipe), so not a checkpoint")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save: a zip, or a legacy pickle
        raise CheckpointError(f"{path}: not a checkpoint (not a file written by torch.save)")
    if head.startswith(b"PK"):
        check_unpacked_size(path)
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


MAX_CHECKPOINT_BYTES = 2**30  # this project's checkpoints hold under 10 MB of tensors; a teacher's about 25 MB


def check_unpacked_size(path, limit=None):
    """What a zip checkpoint's entries unpack to, from the sizes in its directory, before anything is
    read: a small file whose entries unpack to gigabytes (deflated zeros) is one line."""
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load says what is wrong with the file
    limit = limit or MAX_CHECKPOINT_BYTES
    if total > limit:
        raise CheckpointError(
            f"{path}: its entries unpack to {total / 2**20:,.0f} MB, more than a checkpoint of this project holds "
            f"({limit / 2**20:,.0f} MB at most); not loaded"
        )


DEFAULT_IMAGE_SIZE = (32, 32)  # for checkpoints written before they recorded their image size
# an image size beyond this in a checkpoint is damage, not a network of this project: one 1024x1024
# picture already asks the shipped network for hundreds of megabytes of activations
MAX_IMAGE_SIDE = 1024


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _stats_problem(stats):
    if not isinstance(stats, dict) or not all(isinstance(stats.get(k), (list, tuple)) for k in ("mean", "std")):
        return "not {'mean': [...], 'std': [...]}"
    mean, std = stats["mean"], stats["std"]
    if not mean or len(mean) != len(std) or not all(_number(v) and np.isfinite(v) for v in (*mean, *std)):
        return "not two equally long lists of finite numbers"
    if len(mean) != 3:
        return f"the statistics of {len(mean)} channels, where the network reads 3 (RGB)"
    if min(std) <= 0:
        return f"a std of {min(std)} (inputs are divided by it)"
    return None


class Entry(NamedTuple):
    """One key of a checkpoint: what it is for, a test of its value (None values pass: an entry the
    file does not need) and what the test expects, for the one-line error."""

    role: str  # weights (kept by an export) | resume | averaging | lookahead | distill
    ok: object = None  # value -> bool; None: any value
    expected: str = ""


def _is_int(v, low=0):
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_state_dict(v):
    return isinstance(v, dict) and all(isinstance(k, str) and torch.is_tensor(t) for k, t in v.items())


def _is_image_size(v):
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(n, 1) and n <= MAX_IMAGE_SIDE for n in v)


def _is_optimizer_state(v):
    groups = v.get("param_groups") if isinstance(v, dict) else None
    return isinstance(v.get("state") if isinstance(v, dict) else None, dict) and (
        isinstance(groups, list) and len(groups) > 0 and all(isinstance(g, dict) for g in groups)
    )


def _is_classes(v):
    return isinstance(v, (list, tuple)) and v and all(isinstance(c, str) for c in v) and len(set(v)) == len(v)


def _is_dict(v):
    return isinstance(v, dict)


# The one schema: every key a checkpoint of this project may hold.
ENTRIES = {
    "format_version": Entry("weights"),  # checked by load_checkpoint against FORMAT_VERSION
    "epoch": Entry("weights", _is_int, "an epoch number >= 0"),
    "state_dict": Entry("weights", _is_state_dict, "a mapping of names to tensors"),
    "config": Entry("weights", _is_dict, "an object"),
    "history": Entry(
        "weights", lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v), "a list of epoch logs"
    ),
    "data_stats": Entry(
        "weights", lambda v: _stats_problem(v) is None, "{'mean': [...], 'std': [...]} with every std > 0"
    ),
    "classes": Entry("weights", _is_classes, "a list of distinct class names"),
    "image_size": Entry("weights", _is_image_size, f"[height, width], each from 1 to {MAX_IMAGE_SIDE}"),
    "monitor_best": Entry("weights", _number, "a number"),
    "optimizer": Entry("resume", _is_optimizer_state, "an optimizer state with its parameter groups"),
    "rng": Entry(
        "resume",
        lambda v: isinstance(v, dict) and {"torch", "numpy", "python"} <= v.keys(),
        "torch, numpy and python states",
    ),
    "lr_scheduler": Entry("resume", _is_dict, "a scheduler state"),
    "scaler": Entry("resume", _is_dict, "a gradient scaler state"),
    "world_size": Entry("resume", lambda v: _is_int(v, 1), "a process count >= 1"),
    "raw_state_dict": Entry("averaging", _is_dict, "a mapping of names to tensors"),
    "ema_updates": Entry("averaging"),
    "lookahead": Entry("lookahead", _is_dict, "the slow weights and their step count"),
    "teacher_sha256": Entry("distill"),
}


def check_contents(ckpt, path):
    """Each entry of a loaded checkpoint is of the kind this code writes (types, shapes, ranges):
    a damaged or crafted file is one line naming the entry, not a traceback somewhere later."""
    for key, (_, ok, expected) in ENTRIES.items():
        value = ckpt.get(key)
        if value is None or ok is None or ok(value):
            continue
        detail = _stats_problem(value) if key == "data_stats" else None
        shown = detail or (repr(value)[:60] if not isinstance(value, (dict, list)) else type(value).__name__)
        raise CheckpointError(f"{path}: its {key!r} is not {expected} (found {shown}); the file is damaged")


def data_mismatch(classes, image_size, data_classes, data_size):
    """Why weights trained on `classes` at `image_size` do not fit data of `data_classes` at
    `data_size` ("trained on classes [...], the data holds [...]", or the sizes), or None when they
    fit; an entry the checkpoint lacks (None) fits anything. Each caller names the file or key."""
    if image_size and data_size is not None and list(image_size) != list(data_size):
        return f"trained on {image_size[1]}x{image_size[0]} images, the data holds {data_size[1]}x{data_size[0]}"
    if classes and data_classes is not None and list(classes) != list(data_classes):
        return f"trained on classes {list(classes)}, the data holds {list(data_classes)}"
    return None


def check_arch_type(ckpt, model, path):
    """The checkpoint was saved from a network of `model`'s class."""
    saved_arch = ckpt["config"].get("arch", {})
    if saved_arch.get("type") != type(model).__name__:
        raise CheckpointError(
            f"{path}: saved from arch {saved_arch.get('type')!r}, but the config builds {type(model).__name__!r}"
        )


def image_size_of(saved):
    """(height, width) the checkpoint's network was trained on (32x32 for files from before it was kept)."""
    return tuple(saved.image_size or DEFAULT_IMAGE_SIZE)


def check_network_fits(config, saved, path):
    """Build the network on the meta device (no memory) and compare it with the saved weights and
    classes: a config that asks for a far bigger network than the file holds (a damaged or crafted
    checkpoint) is one line, not gigabytes allocated."""
    size = image_size_of(saved)
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
