"""Checkpoints: written atomically (temp file in the same folder, then rename) and read back with
`torch.load(weights_only=True)`, so a checkpoint holds only tensors and plain Python values."""

import contextlib
import os
import pickle
import random
import re
import signal
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import torch

from utils.errors import CheckpointError


def save_atomic(obj, path):
    """torch.save to a temp file beside `path`, fsync, then rename over `path`: a reader never sees
    half a file, and a run killed while saving leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def interrupts_deferred():
    """Hold back Ctrl-C (SIGINT) for the duration of the block and raise it at the end: a save is
    never cut off half-way (in the main thread; elsewhere signals cannot be handled anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


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
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
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
    return ckpt


def load_model_state(model, ckpt, path):
    """Load weights, turning an architecture mismatch (another class, or other shapes) into one
    readable line."""
    saved_arch = ckpt["config"].get("arch", {})
    if saved_arch.get("type") != type(model).__name__:
        raise CheckpointError(
            f"{path}: saved from arch {saved_arch.get('type')!r}, but the config builds {type(model).__name__!r}"
        )
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
