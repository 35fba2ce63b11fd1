"""The shipped weights load with the final code, fit the model built from their own config, meet
the constraints and classify (nothing here needs the training data or the network)."""

import json

import torch

from checkpoint.schema import load_checkpoint, load_model_state
from config.parser import ConfigParser
from config.reading import load_config
from conftest import REPO, run_cli
from model.spec import check_constraints

PRETRAINED = REPO / "pretrained" / "cifar10_dilatednet.pth"


def test_pretrained_weights_load_and_meet_the_constraints():
    assert PRETRAINED.is_file() and PRETRAINED.stat().st_size < 1_000_000
    ckpt = load_checkpoint(PRETRAINED)
    assert "optimizer" not in ckpt and ckpt["classes"][:2] == ["airplane", "automobile"]
    config = ConfigParser(ckpt["config"])
    model = config.init_obj("arch")
    load_model_state(model, ckpt, PRETRAINED)
    assert [c.rule for c in check_constraints(model, config["constraints"]) if not c.ok] == []
    assert ckpt["history"][-1]["epoch"] == ckpt["epoch"] == config["trainer"]["epochs"]
    assert ckpt["config"]["arch"] == json.loads((REPO / "config.json").read_text())["arch"]  # the shipped recipe's net
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_pretrained_weights_run_through_test_py(tiny_folder, tmp_path):
    proc = run_cli(
        "test.py", "--resume", PRETRAINED, "--data_dir", tiny_folder, "--num_workers", "0", "--out", tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "accuracy       :" in proc.stdout + proc.stderr
    assert json.loads((tmp_path / "test_metrics.json").read_text())["images"] == 20


def test_the_swa_stage_starts_from_the_shipped_200_epoch_weights():
    """config_swa.json (how the shipped weights were made: 80 averaged epochs from the 200-epoch weights)
    holds only its changes to config.json, names a shipped file of its network as trainer.init, and the
    shipped weights are what that stage trained."""
    assert json.loads((REPO / "config_swa.json").read_text())["base"] == "config.json"
    config = ConfigParser(load_config(REPO / "config_swa.json"))
    start = REPO / config["trainer"]["init"]
    first = load_checkpoint(start)
    assert first["epoch"] == first["config"]["trainer"]["epochs"] == 200 and "optimizer" not in first
    model = config.init_obj("arch")
    load_model_state(model, first, start)
    assert [c.rule for c in check_constraints(model, config["constraints"]) if not c.ok] == []
    shipped = ConfigParser(load_checkpoint(PRETRAINED)["config"])
    for key in ("arch", "optimizer", "lr_scheduler", "loss"):
        assert shipped[key] == config[key], key
    assert shipped["data_loader"]["args"]["augmentations"] == config["data_loader"]["args"]["augmentations"]
    for key in ("epochs", "swa", "progressive_resize"):
        assert shipped["trainer"][key] == config["trainer"][key], key


def test_torch_hub_loads_the_shipped_network_in_one_line():
    model = torch.hub.load(str(REPO), "dilatednet", source="local", pretrained=True)
    assert not model.training and model.classes[:2] == ["airplane", "automobile"]
    assert set(model.normalization) == {"mean", "std"} and len(model.normalization["mean"]) == 3
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    fresh = torch.hub.load(str(REPO), "dilatednet", source="local", pretrained=False)
    assert fresh.num_params() == model.num_params()
