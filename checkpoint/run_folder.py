"""The run folder `<save_dir>/<name>/<run_id>/`: claimed by one run, locked while a process trains in it."""

import itertools
import json
import os

from utils.errors import ConfigError
from utils.paths import atomic_write


def make_run_dir(run_dir, resume, config):
    """Create the run folder and write `config` (the effective config) into it; return (the folder,
    its lock file). A new run claims a folder of its own (two runs started in the same second get
    `<id>` and `<id>_2`); a resumed run's folder is locked against a second process resuming it,
    and temp files of a checkpoint save that was killed half-way are removed (only those: a report.py
    writing into the folder at the same time keeps its own). A new run that cannot write its folder
    leaves none behind."""
    made, lock = None, None
    try:
        if resume is not None and run_dir == resume.parent:
            lock = _lock(run_dir)
            # utils.paths.atomic_write's checkpoint temp files (".last.<random>.tmp.pth"), and the older ones
            for tmp in [*run_dir.glob(".*.tmp.pth"), *run_dir.glob("*.pth.*.tmp")]:
                tmp.unlink()
        else:
            base = run_dir
            for n in itertools.count(2):
                try:
                    run_dir.mkdir(parents=True, exist_ok=False)
                    made = run_dir
                    break
                except FileExistsError:
                    run_dir = base.with_name(f"{base.name}_{n}")
            lock = _lock(run_dir)
        with atomic_write(run_dir / "config.json") as tmp:
            tmp.write_text(json.dumps(config, indent=4) + "\n")
    except OSError as e:
        if made is not None:  # a full disk at the start: no empty folder and no stale lock left behind
            release(lock)
            for leftover in made.glob(".*"):
                leftover.unlink(missing_ok=True)
            made.rmdir()
        raise ConfigError(f"trainer.save_dir: cannot write the run folder {run_dir} ({e.strerror or e})") from None
    return run_dir, lock


def release(lock):
    if lock is not None:
        lock.unlink(missing_ok=True)


def _lock(run_dir):
    lock = run_dir / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if _alive(pid):
                raise ConfigError(
                    f"{run_dir}: another process (pid {pid}) is training in this run folder; "
                    f"wait for it to end or stop it (or delete {lock} if that process is gone)"
                ) from None
            lock.unlink(missing_ok=True)  # left by a process that was killed
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    raise ConfigError(f"{run_dir}: cannot take the lock {lock}")


def _alive(pid):
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
