"""The recipe options of the trainer section (weight EMA, MixUp/CutMix, progressive resizing) and of
the network (activation, squeeze-excite): what each does to a batch or a model, and a tiny run with
all of them that resumes bit-exactly and evaluates the averaged weights."""

import json
import re
import shutil

import pytest
import torch

from checkpoint.schema import FORMAT_VERSION, load_checkpoint
from config.parser import ConfigParser
from conftest import REPO, run_cli, tiny_config, without_timing
from model.model import DilatedNet
from model.spec import describe
from trainer.batch_tricks import BatchTricks, resize_schedule
from utils.errors import ArgumentError, ConfigError

ALL_TRICKS = dict(
    ema={"decay": 0.5},
    mix={"type": "CutMix", "alpha": 1.0, "p": 1.0, "ramp_epochs": 2},
    progressive_resize={"min_size": 16, "until": 0.5},
)
ALL_ARCH = dict(act="silu", se=16, widths=[64, 64, 128, 144])


def test_resize_schedule_grows_in_steps_of_four_to_the_full_size():
    assert resize_schedule(16, 0.5, 10, 32) == {1: 16, 2: 16, 3: 20, 4: 24, 5: 28, 6: 32, 7: 32, 8: 32, 9: 32, 10: 32}
    assert set(resize_schedule(16, 1.0, 3, 32).values()) <= {16, 20, 24, 28, 32}


def test_tricks_resize_the_batch_and_keep_channels_last():
    tricks = BatchTricks({"progressive_resize": {"min_size": 16, "until": 0.5}}, 10, (32, 32), 4)
    assert tricks.start_epoch(1) == {"image_size": 16}  # no mixing configured: no mix_p logged
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    images, target = tricks.batch(x, torch.arange(4))
    assert images.shape == (4, 3, 16, 16) and images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(target, torch.arange(4))
    assert tricks.start_epoch(3)["image_size"] == 32
    assert tricks.batch(x, torch.arange(4))[0] is x  # full size: the batch as it was


def test_mixing_probability_ramps_in_and_mixed_targets_are_soft():
    torch.manual_seed(0)
    tricks = BatchTricks({"mix": {"type": "MixUp", "alpha": 1.0, "p": 1.0, "ramp_epochs": 4}}, 10, (32, 32), 8)
    assert [tricks.start_epoch(e) for e in (1, 2, 4, 8)] == [{"mix_p": p} for p in (0.25, 0.5, 1.0, 1.0)]
    x, y = torch.randn(6, 3, 32, 32), torch.arange(6)
    images, loss_target = tricks.batch(x, y)
    assert loss_target.shape == (6, 10)
    assert torch.allclose(loss_target.sum(1), torch.ones(6)) and not torch.equal(images, x)


def test_activation_and_squeeze_excite_keep_the_spec_and_the_shipped_weights_keys():
    for kwargs in ({"act": "silu"}, {"act": "gelu"}, {"act": "leaky_relu"}, {"se": 16, "widths": [64, 64, 128, 144]}):
        model = DilatedNet(**kwargs)
        _, failed = describe(model, json.loads((REPO / "config.json").read_text())["constraints"])
        assert not failed, (kwargs, failed)
    assert set(DilatedNet().state_dict()) == set(DilatedNet(act="silu").state_dict())
    with pytest.raises(ArgumentError, match="^act: expected one of relu, leaky_relu, silu") as err:
        DilatedNet(act="tanh")  # the class names its argument; the config layer names the key
    assert err.value.arg == "act" and isinstance(err.value, ValueError)
    with pytest.raises(ArgumentError, match="^se: expected an integer >= 0"):
        DilatedNet(se=-1)
    config = json.loads((REPO / "config.json").read_text())
    config["arch"]["args"]["act"] = "tanh"
    with pytest.raises(ConfigError, match="^arch.args.act: expected one of relu, leaky_relu, silu"):
        ConfigParser(config).init_obj("arch")


@pytest.fixture(scope="module")
def tricked(tmp_path_factory, tiny_folder):
    tmp = tmp_path_factory.mktemp("tricks")
    path = tiny_config(tmp, tiny_folder, **ALL_TRICKS)
    config = json.loads(path.read_text())
    config["arch"]["args"].update(ALL_ARCH)
    path.write_text(json.dumps(config))
    proc = run_cli("train.py", "-c", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, next((tmp / "saved").glob("*/*"))


def test_ema_is_what_is_validated_saved_and_tested(tricked, tiny_folder, tmp_path):
    proc, run_dir = tricked
    assert "Weights evaluated and saved: the EMA of the weights (decay 0.5" in proc.stdout
    assert re.search(r"val_accuracy_raw *: \d+\.\d\d", proc.stdout)  # the raw weights, on their own line
    assert re.findall(r"image_size +: (\d+)", proc.stdout) == ["16", "32"]
    # said once, at the first small epoch: validation runs at full size while training images are small
    assert proc.stdout.count("note: epoch 1 trains on 16-px images (progressive resizing) and validates at 32 px") == 1
    ckpt = load_checkpoint(run_dir / "last.pth")
    assert ckpt["format_version"] == FORMAT_VERSION
    assert int(ckpt["ema_updates"]) == 2 * 5  # 2 epochs of 5 batches: one update per step
    assert any(not torch.equal(ckpt["state_dict"][k], ckpt["raw_state_dict"][k]) for k in ckpt["state_dict"])
    final = ckpt["history"][-1]
    out = run_cli(
        "test.py", "--resume", run_dir / "last.pth", "--data_dir", tiny_folder, "--out", tmp_path, "--tta", "flip"
    )
    assert out.returncode == 0, out.stderr
    assert re.search(rf"^    accuracy +: {final['val_accuracy']:.2f}$", out.stdout, re.M)  # test.py = the EMA
    # the flip-TTA figure comes after the plain one, on lines of its own
    assert (
        out.stdout.index("    accuracy ") < out.stdout.index("Flip test-time") < out.stdout.index("accuracy_flip_tta")
    )
    export = tmp_path / "w.pth"
    assert run_cli("export.py", "--resume", run_dir / "last.pth", "--out", export).returncode == 0
    shipped = load_checkpoint(export)
    assert "raw_state_dict" not in shipped and shipped["format_version"] == FORMAT_VERSION
    assert all(torch.equal(shipped["state_dict"][k], v) for k, v in ckpt["state_dict"].items())


def test_resume_with_ema_and_tricks_is_bit_exact(tricked, tmp_path):
    _, run_dir = tricked
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    straight = load_checkpoint(copy / "last.pth")
    proc = run_cli("train.py", "--resume", copy / "checkpoint-epoch1.pth")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    resumed = load_checkpoint(copy / "last.pth")
    for key in ("state_dict", "raw_state_dict"):
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, resumed[key][name]), (key, name)
    assert int(resumed["ema_updates"]) == int(straight["ema_updates"])
    assert [without_timing(h) for h in resumed["history"]] == [without_timing(h) for h in straight["history"]]


def test_epoch_benchmark_times_each_variant_on_the_real_loader(tmp_path, tiny_folder, capsys, monkeypatch):
    from benchmarks.epoch_benchmark import cli
    from trainer.batch_tricks import BatchTricks

    sizes, call = [], BatchTricks.batch

    def recording(self, images, target):
        out = call(self, images, target)
        sizes.append(out[0].shape[-1])
        return out

    monkeypatch.setattr(BatchTricks, "batch", recording)
    config = tiny_config(tmp_path, tiny_folder)
    argv = ["-c", str(config), "--variant", "workers=0,threads=1", "--variant", "flush_denormal=1,amp=off"]
    assert cli([*argv, "--variant", "size=16", "--batches", "2", "--rounds", "1"]) in (None, 0)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "s/batch" not in line]
    names = ["| workers=0, threads=1", "| flush_denormal=1, amp=off", "| size=16"]
    assert [row.split(" | ")[0] for row in rows] == names
    assert sizes and set(sizes) == {16}  # only the size=16 variant has batch tricks, and it trains at 16 px
    # s/batch, three decimals (s/epoch has one, and a tiny epoch on a fast CPU rounds to 0.0)
    assert all(float(row.split(" | ")[1]) > 0 for row in rows)
    assert not (tmp_path / "saved").exists()  # nothing written
    assert cli([*argv[:2], "--variant", "gpus=2"]) == 2  # an unknown setting: one line


def test_step_benchmark_prints_a_row_per_config_with_the_resize_schedule_cheaper(tmp_path, tiny_folder, capsys):
    import argparse

    from benchmarks.step_benchmark import main

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = tiny_config(tmp_path / "a", tiny_folder)
    tiny_config(tmp_path / "b", tiny_folder, progressive_resize={"min_size": 8, "until": 1.0}, epochs=4)
    (tmp_path / "b" / "config.json").rename(tmp_path / "b" / "resized.json")
    args = argparse.Namespace(
        config=[str(plain), str(tmp_path / "b" / "resized.json")],
        train_images=1000,
        valid_images=500,
        batches=2,
        rounds=1,
        threads=0,
        image_size=32,
    )
    rows = main(args)
    assert [r["config"] for r in rows] == ["config", "resized"] and rows[0]["params"] == 99_146
    assert all(r["epoch_s"] > 0 for r in rows)
    assert "| resized | 99,146 | 10.1 |" in capsys.readouterr().out


def test_ema_decay_warms_up_then_holds():
    from trainer.ema import ema_with_warmup

    update = ema_with_warmup(0.9)
    for n, expected in ((1, 1 - 2 / 11), (100, 0.1)):  # after n updates: lerp weight 1 - min(0.9, (1+n)/(10+n))
        averaged, current = [torch.zeros(3), torch.zeros((), dtype=torch.long)], [torch.ones(3), torch.tensor(7)]
        update(averaged, current, torch.tensor(n))
        assert torch.allclose(averaged[0], torch.full((3,), expected)) and int(averaged[1]) == 7
