"""Stochastic weight averaging (trainer.swa) and starting from trained weights (trainer.init): the
average is the mean of the epochs' weights with BatchNorm statistics of its own, it is what is
validated, saved, tested and exported, a resume before or after its start is bit-exact, and the
mistakes are one line."""

import json
import re
import shutil

import pytest
import torch
from torch import nn

from conftest import assert_one_line_error, run_cli, tiny_config, without_timing
from trainer.swa import build_swa, swa_update

SWA = {"start": 2, "bn_batches": 2}


def test_swa_update_averages_the_weights_and_recomputes_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    swa = build_swa(model, SWA)
    loader = [(torch.randn(8, 3, 5, 5) * 3 + 1, torch.zeros(8, dtype=torch.long)) for _ in range(3)]
    first = model[0].weight.detach().clone()
    swa_update(swa, model, loader, torch.device("cpu"), bn_batches=2)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    swa_update(swa, model, loader, torch.device("cpu"), bn_batches=2)
    assert int(swa.n_averaged) == 2
    assert torch.allclose(swa.module[0].weight, first + 0.5)  # the mean of the two epochs' weights
    with torch.no_grad():  # the statistics of the average's own activations on the first 2 batches
        out = swa.module[0](torch.cat([images for images, _ in loader[:2]]))
    assert torch.allclose(swa.module[1].running_mean, out.mean((0, 2, 3)), atol=1e-5)
    assert not torch.allclose(model[1].running_mean, swa.module[1].running_mean)  # the model's are its own
    assert build_swa(model, None) is None


@pytest.fixture(scope="module")
def swa_run(tmp_path_factory, tiny_folder):
    tmp = tmp_path_factory.mktemp("swa")
    proc = run_cli("train.py", "-c", tiny_config(tmp, tiny_folder, epochs=3, swa=SWA))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, next((tmp / "saved").glob("*/*"))


def test_swa_is_what_is_validated_saved_tested_and_exported(swa_run, tiny_folder, tmp_path):
    proc, run_dir = swa_run
    assert "until epoch 1, then the average of the weights at the end of each epoch from epoch 2 on (SWA" in proc.stdout
    assert "for comparison with the SWA above" in proc.stdout
    before = torch.load(run_dir / "checkpoint-epoch1.pth", weights_only=True)
    assert "raw_state_dict" not in before  # no average yet: the trained weights are the evaluated ones
    second, last = (torch.load(run_dir / f"checkpoint-epoch{e}.pth", weights_only=True) for e in (2, 3))
    assert int(last["ema_updates"]) == 2
    for name, tensor in last["state_dict"].items():
        if name.endswith("weight") and tensor.is_floating_point():  # epochs 2 and 3's weights, averaged
            mean = (second["raw_state_dict"][name] + last["raw_state_dict"][name]) / 2
            assert torch.allclose(tensor, mean, atol=1e-6), name
    bn = [k for k in last["state_dict"] if k.endswith("running_var")]
    assert any(not torch.equal(last["state_dict"][k], last["raw_state_dict"][k]) for k in bn)
    out = run_cli("test.py", "--resume", run_dir / "last.pth", "--data_dir", tiny_folder, "--out", tmp_path)
    assert out.returncode == 0, out.stderr
    history = last["history"][-1]
    assert f"    accuracy       : {history['val_accuracy']:.2f}" in out.stdout  # test.py scores the average
    assert run_cli("export.py", "--resume", run_dir / "last.pth", "--out", tmp_path / "w.pth").returncode == 0
    shipped = torch.load(tmp_path / "w.pth", weights_only=True)
    assert all(torch.equal(shipped["state_dict"][k], v) for k, v in last["state_dict"].items())


def test_swa_bn_benchmark_prints_the_accuracy_per_draw_of_batches(swa_run, tiny_folder):
    _, run_dir = swa_run
    proc = run_cli(
        "-m", "benchmarks.swa_bn", "--resume", run_dir / "last.pth", "--data_dir", tiny_folder, "--batches", "1",
        "--repeats", "2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = dict(re.findall(r"^\| (.+?) \| (\d+\.\d\d)% \|$", proc.stdout, re.M))
    assert list(rows) == ["as saved", "1 batches, draw 1", "1 batches, draw 2", "all 5 batches"]
    final = torch.load(run_dir / "last.pth", weights_only=True)["history"][-1]["val_accuracy"]
    assert rows["as saved"] == f"{final:.2f}"  # the statistics the run validated with
    assert all(0 <= float(v) <= 100 for v in rows.values())


@pytest.mark.parametrize("epoch", [1, 2])
def test_swa_resumes_bit_exactly_before_and_after_its_start(swa_run, tmp_path, epoch):
    _, run_dir = swa_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    straight = torch.load(copy / "last.pth", weights_only=True)
    proc = run_cli("train.py", "--resume", copy / f"checkpoint-epoch{epoch}.pth")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "starts averaging" not in proc.stdout + proc.stderr
    resumed = torch.load(copy / "last.pth", weights_only=True)
    for key in ("state_dict", "raw_state_dict"):
        assert all(torch.equal(t, resumed[key][k]) for k, t in straight[key].items()), key
    assert [without_timing(h) for h in resumed["history"]] == [without_timing(h) for h in straight["history"]]


def test_init_starts_a_new_run_from_trained_weights(tmp_path, tiny_folder, finished_run):
    run_dir, _ = finished_run
    start = tmp_path / "start.pth"
    assert run_cli("export.py", "--resume", run_dir / "last.pth", "--out", start).returncode == 0
    config = tiny_config(tmp_path, tiny_folder, epochs=1, init=str(start))
    edited = json.loads(config.read_text())
    edited["optimizer"]["args"].update(lr=0.0, weight_decay=0.0)  # nothing moves: the weights stay the start's
    edited["lr_scheduler"] = None
    config.write_text(json.dumps(edited))
    proc = run_cli("train.py", "-c", config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Weights: start from {start} (sha256" in proc.stdout
    trained = torch.load(next((tmp_path / "saved").glob("*/*")) / "last.pth", weights_only=True)
    given = torch.load(start, weights_only=True)["state_dict"]
    assert all(torch.equal(t, trained["state_dict"][k]) for k, t in given.items() if k.endswith("weight"))
    assert (
        run_cli(
            "export.py", "--resume", next((tmp_path / "saved").glob("*/*")) / "last.pth", "--out", tmp_path / "w.pth"
        ).returncode
        == 0
    )
    assert torch.load(tmp_path / "w.pth", weights_only=True)["config"]["trainer"]["init"] == "start.pth"


def test_swa_and_init_mistakes_are_one_line(tmp_path, tiny_folder):
    both = tiny_config(tmp_path, tiny_folder, swa=SWA, ema={"decay": 0.9})
    assert_one_line_error(run_cli("train.py", "-c", both), "trainer.swa", "trainer.ema")
    late = tiny_config(tmp_path, tiny_folder, swa={"start": 3})
    assert_one_line_error(run_cli("train.py", "-c", late), "trainer.swa.start", "after the last epoch")
    missing = tiny_config(tmp_path, tiny_folder, init=str(tmp_path / "nope.pth"))
    assert_one_line_error(run_cli("train.py", "-c", missing), "nope.pth")
    wrong = tiny_config(tmp_path, tiny_folder, init=str(tmp_path / "other.pth"))
    other = json.loads(wrong.read_text())
    torch.save({"state_dict": {"x": torch.zeros(1)}, "config": {"arch": other["arch"]}}, tmp_path / "other.pth")
    assert_one_line_error(run_cli("train.py", "-c", wrong), "other.pth")


def test_swa_lr_holds_a_constant_rate_once_the_schedule_has_run(tmp_path, tiny_folder):
    """config.json's shape: the schedule spans the epochs before averaging (a fraction of the run),
    then the averaged epochs train at trainer.swa.lr; one command trains and averages."""
    swa = {"start": 0.5, "lr": 0.004, "bn_batches": 2}
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder, epochs=4, swa=swa))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "until epoch 2, then the average of the weights at the end of each epoch from epoch 3 on" in proc.stdout
    last = torch.load(next((tmp_path / "saved").glob("*/*")) / "last.pth", weights_only=True)
    lrs = [h["lr"] for h in last["history"]]
    peak = json.loads((tmp_path / "config.json").read_text())["optimizer"]["args"]["lr"]
    assert lrs[1] == pytest.approx(peak / 20 / 200)  # OneCycle ran its whole course in 2 epochs
    assert lrs[2:] == [0.004, 0.004] and int(last["ema_updates"]) == 2


def test_swa_start_as_a_fraction_follows_the_epochs():
    from config.schedules import schedule_epochs, swa_start

    cfg = {"swa": {"start": 0.834, "lr": 0.015}}
    assert [swa_start({**cfg, "epochs": e}) for e in (240, 120, 6, 1)] == [201, 101, 6, 2]
    assert schedule_epochs({**cfg, "epochs": 240}) == 200
    assert schedule_epochs({"swa": {"start": 5}, "epochs": 9}) == 9  # no lr: the schedule spans the run
    assert swa_start({"swa": None, "epochs": 9}) is None
