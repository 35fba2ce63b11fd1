"""Extending the house: a second dataset or network, in a new file, listed in config/registry.py and
used through the config alone."""

import importlib.util
import json
import sys

import pytest

from config import registry
from config.parser import ConfigParser
from conftest import REPO, assert_one_line_error, run_cli, tiny_config
from utils.errors import ConfigError

LOADER = '''
import torch
from torch.utils.data import Dataset

from base import BaseDataLoader

SIZE = 16

class Stripes(Dataset):
    """A plain map-style dataset: float CHW tensors, no `images` array, no seeded augmentation."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.x = torch.randn(n, 3, SIZE, SIZE, generator=g) * 0.1
        for i, label in enumerate(self.labels):
            self.x[i, int(label)] += 1.0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i])


class StripesDataLoader(BaseDataLoader):
    def __init__(self, batch_size: int = 8, shuffle: bool = True, num_workers: int = 0, n: int = 48,
                 test: bool = False):
        self.classes = ["red", "green", "blue"]
        self.stats = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
        self.valid_name = "test" if test else "validation"
        if test:
            super().__init__(Stripes(n // 2, 2), batch_size, False, num_workers)
        else:
            super().__init__(Stripes(n, 0), batch_size, shuffle, num_workers, valid_dataset=Stripes(n // 2, 1))
'''
TEST_SPLIT = """

    @classmethod
    def for_test(cls, args, stats):
        return cls(**{**args, "test": True})
"""


def listed(monkeypatch, tmp_path, name, source, cls, place):
    """Import `source` as a new file `name`.py and list its class `cls` in the registry's `place`,
    as an edit of config/registry.py would; returns the class."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(place, cls, getattr(module, cls), raising=False)
    return getattr(module, cls)


def _train_stripes(tmp_path, monkeypatch, loader_source, constraints=False):
    import train

    listed(monkeypatch, tmp_path, "stripes", loader_source, "StripesDataLoader", registry.DATA_LOADERS)
    config = json.loads((REPO / "config.json").read_text())
    config["data_loader"] = {"type": "StripesDataLoader", "args": {"batch_size": 8}}
    config["arch"]["args"]["num_classes"] = 3
    if not constraints:
        config.pop("constraints")  # 16x16 inputs: the spec's rules are not the point here
    config["trainer"].update(epochs=3, save_dir=str(tmp_path / "saved"), distill=None)  # a CIFAR-10 teacher
    history = train.main(ConfigParser(config))
    (run_dir,) = (tmp_path / "saved").glob("*/*")
    return history, run_dir


def test_a_second_dataset_in_a_new_file_trains_tests_and_reports_through_the_config(tmp_path, monkeypatch, capsys):
    """The data-loader contract (base.BaseDataLoader) is all test.py and report.py use."""
    import report
    import test as test_script

    history, run_dir = _train_stripes(tmp_path, monkeypatch, LOADER + TEST_SPLIT)
    assert [h["epoch"] for h in history] == [1, 2, 3] and 0 <= history[-1]["val_accuracy"] <= 100
    assert (run_dir / "last.pth").is_file() and (run_dir / "report.md").is_file()
    assert not (run_dir / "misclassified.png").exists()  # no uint8 pictures to show: that grid is left out

    assert test_script.cli(["--resume", str(run_dir / "last.pth"), "--out", str(tmp_path / "test")]) == 0
    metrics = json.loads((tmp_path / "test" / "test_metrics.json").read_text())
    assert metrics["images"] == 24 and set(metrics) >= {"acc_red", "acc_green", "acc_blue"}
    assert report.cli(["--resume", str(run_dir / "last.pth"), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Validation accuracy recomputed" in text and "of 24 images" in text


def test_a_64_pixel_dataset_is_checked_trained_tested_and_reported_at_its_own_size(tmp_path, monkeypatch, capsys):
    """The spec check, the layer summary and the report use the data's image size, not 32x32."""
    import report
    import test as test_script

    _, run_dir = _train_stripes(tmp_path, monkeypatch, (LOADER + TEST_SPLIT).replace("SIZE = 16", "SIZE = 64"), True)
    log = (run_dir / "info.log").read_text()
    assert "[1, 144, 16, 16]" in log and "[1, 144, 8, 8]" not in log  # C3's output for a 64x64 input
    assert "[PASS] max_params" in log and "[PASS] require_gap" in log
    assert test_script.cli(["--resume", str(run_dir / "last.pth"), "--out", str(tmp_path / "test")]) == 0
    assert report.cli(["--resume", str(run_dir / "last.pth"), "--out", str(tmp_path / "report")]) == 0
    assert "[1, 144, 16, 16]" in (tmp_path / "report" / "report.md").read_text()


def test_test_py_on_a_dataset_without_a_test_split_is_one_line(tmp_path, monkeypatch, capsys):
    import test as test_script

    _, run_dir = _train_stripes(tmp_path, monkeypatch, LOADER)
    capsys.readouterr()
    assert test_script.cli(["--resume", str(run_dir / "last.pth"), "--out", str(tmp_path / "test")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "StripesDataLoader has no test split" in err, err


def test_a_network_that_returns_no_logits_tensor_is_one_line(tmp_path, tiny_folder, monkeypatch):
    """A model under model/ whose forward returns a tuple (or a dict, or a 4-D map) is named in one
    line saying what the trainer expects, before any run folder."""
    from conftest import run_cli, tiny_config

    source = (
        "import torch.nn as nn\n\nfrom base import BaseModel\n\n\n"
        "class TupleNet(BaseModel):\n"
        "    def __init__(self, num_classes: int = 10):\n"
        "        super().__init__()\n"
        "        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))\n\n"
        "    def forward(self, x):\n"
        "        return self.head(x), x\n"
    )
    listed(monkeypatch, tmp_path, "tuple_net", source, "TupleNet", registry.ARCHS)
    path = tiny_config(tmp_path, tiny_folder, epochs=1)
    edited = json.loads(path.read_text())
    edited["arch"] = {"type": "TupleNet", "args": {}}
    edited["constraints"]["enforce"] = False
    path.write_text(json.dumps(edited))
    proc = run_cli("train.py", "-c", path)
    assert_one_line_error(proc, "TupleNet.forward returns a tuple; the trainer expects one tensor of logits")
    assert not (tmp_path / "saved").exists()


def test_a_network_is_found_by_the_name_it_is_listed_under_and_must_subclass_base_model(tmp_path, monkeypatch):
    """config/registry.py lists the classes a config may name: a listed BaseModel builds; a listed
    plain nn.Module is one line saying what it must subclass; an unlisted name lists the known ones."""
    import torch.nn as nn

    config = json.loads((REPO / "config.json").read_text())
    config["constraints"]["enforce"] = False
    body = (
        "    def __init__(self, num_classes: int = 10):\n        super().__init__()\n"
        "        self.fc = nn.Linear(3, num_classes)\n\n    def forward(self, x):\n"
        "        return self.fc(x.mean((2, 3)))\n"
    )
    listed(
        monkeypatch,
        tmp_path,
        "tiny",
        f"import torch.nn as nn\nfrom base import BaseModel\n\n\nclass TinyNet(BaseModel):\n{body}",
        "TinyNet",
        registry.ARCHS,
    )
    config["arch"] = {"type": "TinyNet", "args": {"num_classes": 10}}
    assert isinstance(ConfigParser(config).init_obj("arch"), nn.Module)
    listed(
        monkeypatch,
        tmp_path,
        "plain",
        f"import torch.nn as nn\n\n\nclass MyNet(nn.Module):\n{body}",
        "MyNet",
        registry.ARCHS,
    )
    config["arch"] = {"type": "MyNet", "args": {}}
    with pytest.raises(
        ConfigError, match=r"arch.type: 'MyNet' is not a BaseModel class .*it must subclass base.base_model.BaseModel"
    ):
        ConfigParser(config)
    config["arch"] = {"type": "Missing", "args": {}}
    with pytest.raises(ConfigError, match=r"'Missing' is not one of DilatedNet, TeacherNet.*config/registry.py"):
        ConfigParser(config)


def test_any_metric_list_works_end_to_end_with_args(tmp_path, tiny_folder):
    config = json.loads(tiny_config(tmp_path, tiny_folder, report=True).read_text())
    config["metrics"] = [{"type": "top_k_acc", "args": {"k": 3}, "name": "top3_acc"}]
    config["trainer"]["monitor"] = "max val_top3_acc"
    (tmp_path / "topk.json").write_text(json.dumps(config))
    proc = run_cli("train.py", "-c", tmp_path / "topk.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "    val_top3_acc   : " in proc.stdout and "    accuracy" not in proc.stdout
    (run_dir,) = (tmp_path / "saved").glob("*/*")
    assert (run_dir / "model_best.pth").is_file() and (run_dir / "report.md").is_file()
    proc = run_cli("test.py", "--resume", run_dir / "last.pth", "--out", tmp_path / "test")
    assert proc.returncode == 0 and "    top3_acc       : " in proc.stdout, proc.stderr
