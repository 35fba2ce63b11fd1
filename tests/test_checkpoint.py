import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.checkpoint import get_rng_state, load_checkpoint, load_model_state, set_rng_state
from utils.errors import CheckpointError
from utils.paths import save_atomic


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_atomic({"state_dict": {"w": torch.ones(2)}, "config": {}}, path)

    def dies_half_way(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the run is killed while writing

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"state_dict": {"w": torch.zeros(2)}, "config": {}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temp file left behind
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))  # old one intact


@pytest.mark.parametrize("name", ["report.md", "curves.png", "preds.csv"])
def test_every_output_is_written_atomically(tmp_path, name):
    from utils.paths import atomic_write

    path = tmp_path / name
    path.write_text("the previous file")
    with pytest.raises(OSError), atomic_write(path) as tmp:  # a full disk half-way
        assert tmp.suffix == path.suffix and tmp.parent == path.parent
        tmp.write_text("half of the new")
        raise OSError(28, "No space left on device")
    assert path.read_text() == "the previous file" and [p.name for p in tmp_path.iterdir()] == [name]
    with atomic_write(path) as tmp:
        tmp.write_text("the new file")
    assert path.read_text() == "the new file" and [p.name for p in tmp_path.iterdir()] == [name]


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_atomic({"state_dict": {}, "config": {}, "rng": get_rng_state()}, tmp_path / "c.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(load_checkpoint(tmp_path / "c.pth")["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a checkpoint (not a file written by torch.save)"),
        (b"garbage" * 100, "not a checkpoint (not a file written by torch.save)"),
        (b"hello world\n", "not a checkpoint (not a file written by torch.save)"),  # was torch's KeyError
        (b"PK\x03\x04" + b"x" * 100, "not a readable checkpoint"),
    ],
)
def test_corrupt_checkpoint(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(path)


def test_foreign_and_missing_checkpoints(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_checkpoint(tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "none.pth")


class Arbitrary:
    """Any class: weights_only loading must refuse to build it."""


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("echo never run",))


@pytest.mark.parametrize("payload, shown", [(Arbitrary(), r".*Arbitrary"), (RunsACommand(), r"posix\.system")])
def test_unsafe_pickle_is_refused(tmp_path, payload, shown):
    torch.save({"state_dict": {}, "config": {}, "x": payload}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=rf"refused: it holds a Python object \({shown}\)") as info:
        load_checkpoint(tmp_path / "evil.pth")
    assert "weights_only=False" not in str(info.value)  # never advise the unsafe load


def test_weights_of_another_architecture():
    small, big = torch.nn.Linear(2, 3), torch.nn.Linear(4, 3)
    ckpt = {"state_dict": big.state_dict(), "config": {"arch": {"type": "Linear", "args": {}}}}
    with pytest.raises(CheckpointError, match="weights do not fit the model Linear") as info:
        load_model_state(small, ckpt, "big.pth")
    assert "\n" not in str(info.value)


def test_a_folder_or_a_device_is_not_a_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder; give a checkpoint file in it"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="is not a regular file"):
        load_checkpoint("/dev/null")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "none.pth")
