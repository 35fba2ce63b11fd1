"""Output paths checked before any work: a command that cannot write its result says so at once."""

import tempfile
from pathlib import Path

from utils.errors import ConfigError


def check_writable(path, flag="--out"):
    """Create the folder of the file `path` if needed and make sure a file can be written in it;
    a ConfigError naming `flag` otherwise. The file itself is not touched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot write in {path.parent} ({e.strerror or e})") from None


def default_out(checkpoint, kind, saved=Path("saved")):
    """Where test.py and report.py write by default: beside a checkpoint that lies under saved/;
    for any other (pretrained/, a download) saved/<kind>/<folder>-<name>, never beside it."""
    checkpoint = Path(checkpoint).resolve()
    if checkpoint.is_relative_to(saved.resolve()):
        return checkpoint.parent
    return saved / kind / f"{checkpoint.parent.name}-{checkpoint.stem}"
