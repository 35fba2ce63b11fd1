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


def test_the_shipped_weights_are_config_jsons_own_run_on_all_the_training_images():
    """config.json's recipe as it stands (no trainer.init, the same network, augmentations, schedule and
    teacher), its final epoch, trained on every training image (nothing held out: the test split validated)."""
    import hashlib

    shipped, recipe = load_checkpoint(PRETRAINED), ConfigParser(load_config(REPO / "config.json"))
    saved = ConfigParser(shipped["config"])
    for key in ("arch", "optimizer", "lr_scheduler", "loss", "metrics"):
        assert saved[key] == recipe[key], key
    assert saved["data_loader"]["args"]["augmentations"] == recipe["data_loader"]["args"]["augmentations"]
    assert saved["data_loader"]["args"]["validation_split"] == 0 and not saved["data_loader"]["args"].get(
        "train_subset"
    )
    for key in ("epochs", "swa", "progressive_resize", "ema", "mix", "init"):
        assert saved["trainer"][key] == recipe["trainer"][key], key
    assert shipped["epoch"] == recipe["trainer"]["epochs"] and recipe["trainer"]["init"] is None
    teacher = REPO / recipe["trainer"]["distill"]["teacher"]
    assert saved["trainer"]["distill"] == {**recipe["trainer"]["distill"], "teacher": teacher.name}
    assert shipped["teacher_sha256"] == hashlib.sha256(teacher.read_bytes()).hexdigest()


def test_torch_hub_loads_the_shipped_network_in_one_line():
    model = torch.hub.load(str(REPO), "dilatednet", source="local", pretrained=True)
    assert not model.training and model.classes[:2] == ["airplane", "automobile"]
    assert set(model.normalization) == {"mean", "std"} and len(model.normalization["mean"]) == 3
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    fresh = torch.hub.load(str(REPO), "dilatednet", source="local", pretrained=False)
    assert fresh.num_params() == model.num_params()
