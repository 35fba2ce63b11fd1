"""Output paths checked before any work (a command that cannot write its result says so at once),
the one way every file the project writes in place is written (`atomic_write`; `save_atomic` for
torch.save, with `interrupts_deferred` so that Ctrl-C never cuts a save in half), and a file's sha256."""

import contextlib
import hashlib
import os
import signal
import tempfile
import threading
from pathlib import Path

from utils.errors import ConfigError

DATA_DIR = "data/"  # config.json's data_dir: where data is read (and the one folder a download may create)
SAVE_DIR = "saved/"  # config.json's trainer.save_dir: where runs are written


def file_sha256(path):
    """The sha256 of a file's bytes, in hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable(path, flag="--out", folder=False):
    """Create the folder of the file `path` (or the folder `path` itself, with folder=True) if
    needed and make sure a file can be written in it; a ConfigError naming `flag` otherwise. No
    file is left behind."""
    text, path = str(path), Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is a file; expected a folder")
    if not folder and (path.is_dir() or text.endswith(("/", os.sep))):
        raise ConfigError(f"{flag} {text}: is a folder; expected a file name")
    where = path if folder else path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=where).close()
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot write in {where} ({e.strerror or e})") from None


def default_out(checkpoint, kind, saved=Path("saved")):
    """Where test.py and report.py write by default: beside a checkpoint that lies under saved/;
    for any other (pretrained/, a download) saved/<kind>/<folder>-<name>, never beside it."""
    try:
        checkpoint = Path(checkpoint).resolve()
    except (OSError, RuntimeError):  # a link in a loop: loading it says so, in one line
        checkpoint = Path(checkpoint).absolute()
    if checkpoint.is_relative_to(saved.resolve()):
        return checkpoint.parent
    return saved / kind / f"{checkpoint.parent.name}-{checkpoint.stem}"


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temp path beside `path` (hidden, unique to this writer, with the same suffix so that
    writers that go by the suffix, such as matplotlib, write the same format); when the block ends
    without error the temp file is flushed to disk and renamed over `path`, so a reader (or another
    worker writing the same file) never sees half a file. On any error, a full disk or Ctrl-C
    included, the temp file is removed and a file that was at `path` stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e  # named by the file asked for
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_atomic(obj, path):
    """torch.save to a temp file beside `path`, fsync, then rename over `path`: a reader never sees
    half a file, and a run killed while saving leaves the previous checkpoint intact."""
    import errno

    import torch

    with atomic_write(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch's zip writer reports a full or failing disk this way
            if "PytorchStreamWriter" not in str(e) and "inline_container" not in str(e):
                raise
            raise OSError(errno.ENOSPC, "the file could not be written (is the disk full?)") from None


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
