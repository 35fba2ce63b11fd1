"""How a run was made, written into its run folder (provenance.json, one entry per start or resume):
the command line, the code's git commit and whether the tree had changes, the versions of Python and
the main packages, the device and the CPU model."""

import datetime
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

from utils.paths import atomic_write

PACKAGES = ("torch", "torchvision", "albumentations", "numpy")
REPO = Path(__file__).resolve().parents[1]


def hide_passwords(text):
    """`text` with every password of every URL in it replaced by ***: the one of the userinfo
    (scheme://user:password@host, whatever characters it holds, `@` and `/` included: the host
    follows the last `@`) and any `password=` (or `passwd=`, `pwd=`) query parameter. What the project
    prints or writes never holds one; where a URL is ambiguous, more is hidden, never less."""

    def mask(url):
        scheme, rest = url.group(1), url.group(2)
        userinfo, at, host = rest.rpartition("@")
        if at and ":" in userinfo:
            rest = f"{userinfo.split(':', 1)[0]}:***@{host}"
        return scheme + re.sub(r"(?i)([?&;](?:password|passwd|pwd)=)[^&;\s]*", r"\1***", rest)

    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)(\S+)", mask, text)


def _git(*args):
    """git's answer in the project's folder, or None (no git, not a checkout, too slow)."""
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu_model():
    """The CPU's model name as the OS reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device):
    """What made this run, as a JSON-ready dict."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["torch"] = torch.__version__  # with its build tag (+cpu, +cu130): which wheel ran
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": hide_passwords(shlex.join([Path(sys.executable).name, *sys.argv])),
        "cwd": os.getcwd(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        **versions,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def record_provenance(run_dir, device):
    """Append this start's provenance to run_dir/provenance.json (a list: a resume adds an entry)."""
    path = Path(run_dir) / "provenance.json"
    entries = []
    if path.is_file():
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = []
        if not isinstance(entries, list):
            entries = []
    entries.append(provenance(device))
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(entries, indent=2) + "\n")
    return path
