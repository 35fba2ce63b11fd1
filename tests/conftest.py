"""Tiny generated data (a few dozen 32x32 images) in every layout the project reads, and helpers
to run the command-line scripts. Nothing here reads outside the repository or the network."""

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# pytest.ini runs the suite in one pytest-xdist worker process per core: each worker, and every process a
# test starts from it (torchrun, tuning workers, a real train.py), computes on one thread. Two threads per
# process on a shared core would spin-wait for each other (OpenMP's default), many times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

# A shell starts a background job (`pytest &`, `nohup ... &`, some CI wrappers) with SIGINT ignored,
# and Python then leaves it ignored: Ctrl-C tests run in this process, and their subprocesses (which
# inherit an ignored signal across exec), would see no Ctrl-C. The suite runs as it does in a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N_TRAIN, N_TEST = 4, 2  # images per class


def make_images(n_per_class, seed):
    """Class-coloured noise: class k has a bright channel k % 3 and a stripe at row 3k."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k in range(len(CLASSES)):
        for _ in range(n_per_class):
            img = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
            img[..., k % 3] += 120
            img[3 * k : 3 * k + 2] = 250
            images.append(img)
            labels.append(k)
    return np.stack(images), np.array(labels)


def bomb_png(width, height):
    """A few dozen bytes of PNG whose header declares width x height pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_folder(root, suffix=".png"):
    for split, n, seed in (("train", N_TRAIN, 0), ("test", N_TEST, 1)):
        images, labels = make_images(n, seed)
        for i, (img, label) in enumerate(zip(images, labels)):
            path = Path(root) / split / CLASSES[label] / f"{i:04d}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path, quality=95) if suffix == ".jpg" else Image.fromarray(img).save(path)
    return Path(root)


def write_tar(folder, path, mode):
    with tarfile.open(path, mode) as tar:
        tar.add(folder / "train", arcname="cifar10/train")
        tar.add(folder / "test", arcname="cifar10/test")
    return path


def write_torchvision_root(root):
    """The python-pickle layout of cifar-10-batches-py, as torchvision reads it."""
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train, train_labels = make_images(N_TRAIN, 0)
    test, test_labels = make_images(N_TEST, 1)

    def dump(name, images, labels):
        data = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist()}, f)

    dump("data_batch_1", train, train_labels)
    for i in range(2, 6):
        dump(f"data_batch_{i}", train[:0], train_labels[:0])
    dump("test_batch", test, test_labels)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES}, f)
    return Path(root)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="session")
def tiny_tar_xz(tmp_path_factory, tiny_folder):
    return write_tar(tiny_folder, tmp_path_factory.mktemp("tar") / "tiny.tar.xz", "w:xz")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_folder):
    """One finished 2-epoch tiny run (report off) for every test that only reads one: (its run folder,
    its config path). Read-only: a test that changes a run works on a copy."""
    tmp = tmp_path_factory.mktemp("finished")
    config = tiny_config(tmp, tiny_folder)
    proc = run_cli("train.py", "-c", config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return next((tmp / "saved").glob("*/*")), config


def snapshot(folder):
    """Every file of `folder` (not its subfolders) and its bytes: to show that a failed command changed nothing."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def without_timing(log):
    """An epoch log without its wall-clock entries, which differ between two runs of one recipe."""
    from logger.keys import TIMING_KEYS

    return {k: v for k, v in log.items() if k not in TIMING_KEYS}


def tiny_config(tmp_path, data_dir, **trainer):
    """The shipped config.json, made small: 2 epochs, batch 8, no workers, output under tmp_path, no
    weight averaging (its averaged epochs start after 2), no teacher (tests/test_distill.py covers it)
    and no report at the end (its figures cost seconds; the tests of the report pass report=True)."""
    config = json.loads((REPO / "config.json").read_text())
    config["data_loader"]["args"].update(data_dir=str(data_dir), batch_size=8, num_workers=0, download=False)
    config["trainer"].update(
        {
            "epochs": 2,
            "save_dir": str(tmp_path / "saved"),
            "save_period": 1,
            "report": False,
            "swa": None,
            "distill": None,
            **trainer,
        }
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


# scripts whose `cli(argv)` run_cli calls in this process (a new Python costs ~4 s of imports)
IN_PROCESS = {"train.py", "test.py", "report.py", "export.py", "predict.py", "lr_find.py", "tune.py"}


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal (progress bars show on terminals only)."""

    def isatty(self):
        return True


def run_cli(*args, timeout=600, real_process=False, cwd=REPO, terminal=False):
    """Run `python <script> args...` from cwd (the repository unless given); return a CompletedProcess.
    The scripts of IN_PROCESS (and `-m benchmarks.<name>`) run in this process through their `cli(argv)`,
    with stdout and stderr captured as a subprocess's would be (an uncaught exception: its traceback on
    stderr, exit status 1;
    terminal=True: captured as a terminal's); real_process=True (or any other command) starts a real
    `python`."""
    args = [str(a) for a in args]
    if not real_process and args[0] == "-m" and args[1].startswith("benchmarks."):  # python -m benchmarks.x
        return _run_in_process(args[1], args[2:], cwd, terminal)
    if real_process or args[0] not in IN_PROCESS:
        script = [str(REPO / args[0])] if args[0] in IN_PROCESS else args[:1]
        return subprocess.run(
            [sys.executable, *script, *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
    return _run_in_process(args[0].removesuffix(".py"), args[1:], cwd, terminal)


def _run_in_process(module_name, argv, cwd=REPO, terminal=False):
    import contextlib
    import importlib
    import logging
    import traceback

    import torch

    module = importlib.import_module(module_name)
    out, err = io.StringIO(), (Terminal if terminal else io.StringIO)()
    before, threads, handlers = os.getcwd(), torch.get_num_threads(), list(logging.getLogger().handlers)
    signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # a script may ignore a second one
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = module.cli(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(before)
        torch.set_num_threads(threads)
        for number, handler in signals.items():
            signal.signal(number, handler)
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h not in handlers]:  # the run's console and info.log
            root.removeHandler(handler)
            handler.close()
    return subprocess.CompletedProcess([module_name, *argv], code or 0, out.getvalue(), err.getvalue())


def assert_one_line_error(proc, *fragments):
    """Exit status not 0, no traceback, one line on stderr naming what is wrong."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def png_ok(path, min_side=200):
    assert path.is_file(), path
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= min_side, (img.format, img.size)
    return True
