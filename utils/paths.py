"""Output paths checked before any work: a command that cannot write its result says so at once."""

import tempfile
from pathlib import Path

from utils.errors import ConfigError


def check_writable(path, flag="--out", folder=False):
    """Create the folder of the file `path` (or the folder `path` itself, with folder=True) if
    needed and make sure a file can be written in it; a ConfigError naming `flag` otherwise. No
    file is left behind."""
    path = Path(path)
    where = path if folder else path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=where).close()
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot write in {where} ({e.strerror or e})") from None


def default_out(checkpoint, kind, saved=Path("saved")):
    """Where test.py and report.py write by default: beside a checkpoint that lies under saved/;
    for any other (pretrained/, a download) saved/<kind>/<folder>-<name>, never beside it."""
    checkpoint = Path(checkpoint).resolve()
    if checkpoint.is_relative_to(saved.resolve()):
        return checkpoint.parent
    return saved / kind / f"{checkpoint.parent.name}-{checkpoint.stem}"
