"""Knowledge distillation (trainer.distill): the loss, the teacher's view of each batch, and a tiny
run distilled from another run's checkpoint, resumed, and refused when its teacher file changes."""

import json
import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import assert_one_line_error, run_cli, tiny_config
from trainer.batch_tricks import BatchTricks
from trainer.distill import Distiller, _input_map, seen_validation
from trainer.loops import train_one_epoch


def test_loss_mixes_the_criterion_and_the_tempered_kl_divergence():
    torch.manual_seed(0)
    student, teacher, target = torch.randn(6, 10, requires_grad=True), torch.randn(6, 10), torch.randint(0, 10, (6,))
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)
    plain = Distiller(nn.Identity(), alpha=0.0, temperature=4.0)
    assert torch.equal(plain.mixed_loss(ce, student, target, teacher), ce(student, target))
    kd = Distiller(nn.Identity(), alpha=1.0, temperature=4.0)
    assert kd.mixed_loss(ce, teacher, target, teacher).item() == pytest.approx(0.0, abs=1e-6)  # student == teacher
    kd.mixed_loss(ce, student, target, teacher).backward()
    # d/ds of T^2 x KL(p_t || p_s) at temperature T, averaged over the batch: T (p_s - p_t) / N
    expected = 4.0 * (F.softmax(student.detach() / 4, 1) - F.softmax(teacher / 4, 1)) / 6
    assert torch.allclose(student.grad, expected, atol=1e-6)
    half = Distiller(nn.Identity(), alpha=0.5, temperature=1.0)
    both = half.mixed_loss(ce, student, target, teacher)
    kl = F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), reduction="batchmean", log_target=True)
    assert both.item() == pytest.approx(0.5 * ce(student, target).item() + 0.5 * kl.item(), rel=1e-6)


def test_teacher_inputs_are_renormalised_only_when_its_statistics_differ():
    same = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.2]}
    assert _input_map(same, dict(same)) is None
    teacher = {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.3, 0.25]}
    scale, offset = _input_map(teacher, same)
    raw = torch.rand(2, 3, 4, 4)
    as_student = (raw - torch.tensor(same["mean"]).view(1, 3, 1, 1)) / torch.tensor(same["std"]).view(1, 3, 1, 1)
    as_teacher = (raw - torch.tensor(teacher["mean"]).view(1, 3, 1, 1)) / torch.tensor(teacher["std"]).view(1, 3, 1, 1)
    assert torch.allclose(as_student * scale + offset, as_teacher, atol=1e-6)


class Recorder(nn.Module):
    """A teacher that records the side of each batch it sees and answers fixed logits."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def forward(self, x):
        self.sizes.append(x.shape[-1])
        return torch.zeros(len(x), 10)


def test_teacher_sees_the_full_size_batch_while_progressive_resizing_shrinks_the_students():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    teacher = Recorder()
    distiller = Distiller(teacher, alpha=1.0, temperature=1.0, tta="flip")
    seen = []
    student.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[-1]))
    tricks = BatchTricks({"progressive_resize": {"min_size": 16, "until": 0.5}}, 10, (32, 32), epochs=4)
    tricks.start_epoch(1)
    loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))] * 2
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    log = train_one_epoch(
        student, nn.CrossEntropyLoss(), [], optimizer, loader, torch.device("cpu"), hooks=[distiller, tricks]
    )
    assert seen == [16, 16] and teacher.sizes == [32, 32, 32, 32]  # flip TTA: the image and its mirror
    # uniform teacher logits and alpha 1: the loss is KL(uniform || student), never the labels'
    assert log["loss"] > 0 and not teacher.training


def test_distilled_run_resumes_exports_and_refuses_a_replaced_teacher(tmp_path, tiny_folder, finished_run):
    run_dir, _ = finished_run
    teacher = tmp_path / "teacher.pth"
    shutil.copy(run_dir / "last.pth", teacher)
    distill = {"teacher": str(teacher), "alpha": 0.5, "temperature": 2.0}
    config = tiny_config(tmp_path, tiny_folder, distill=distill)
    proc = run_cli("train.py", "-c", config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Distilling from" in proc.stdout + proc.stderr
    assert "warning: trainer.distill.teacher" not in proc.stdout + proc.stderr  # both validate on the test split
    student = next((tmp_path / "saved").glob("*/*"))
    straight = torch.load(student / "last.pth", weights_only=True)
    assert len(straight["teacher_sha256"]) == 64 and straight["config"]["trainer"]["distill"]["alpha"] == 0.5
    resumed = run_cli("train.py", "--resume", student / "checkpoint-epoch1.pth")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    again = torch.load(student / "last.pth", weights_only=True)
    assert again["epoch"] == 2
    assert all(torch.equal(t, again["state_dict"][k]) for k, t in straight["state_dict"].items())
    assert run_cli("export.py", "--resume", student / "last.pth", "--out", tmp_path / "w.pth").returncode == 0
    exported = torch.load(tmp_path / "w.pth", weights_only=True)
    assert exported["config"]["trainer"]["distill"] == {
        **straight["config"]["trainer"]["distill"],
        "teacher": "teacher.pth",
    }
    assert exported["teacher_sha256"] == straight["teacher_sha256"]  # no machine path, but which file it was
    shutil.copy(run_dir / "checkpoint-epoch1.pth", teacher)  # another file at the teacher's path
    assert_one_line_error(
        run_cli("train.py", "--resume", student / "checkpoint-epoch1.pth"),
        "checkpoint-epoch1.pth",
        "was distilled from a teacher file with sha256",
    )


def test_a_teacher_that_may_have_trained_on_the_validation_images_is_a_warning(tmp_path, tiny_folder, finished_run):
    held = {"validation_split": 5000, "split_seed": 0}
    assert seen_validation(held, dict(held)) is None  # the same images held out by both
    assert seen_validation({"validation_split": 0}, {"validation_split": 0}) is None  # a test split validates
    assert "all the training images" in seen_validation({"validation_split": 0}, held)
    assert "split_seed 1" in seen_validation(held, {**held, "split_seed": 1})
    assert "validation_split 5000 (split_seed 0), this run 2000" in seen_validation(held, {"validation_split": 2000})
    assert seen_validation(held, {"validation_split": 0.1}, pool=50000) is None  # a fraction: the same 5,000
    assert "this run 4500" in seen_validation(held, {"validation_split": 0.1}, pool=45000)
    assert seen_validation({"validation_split": 0.1}, held, pool=50000) is None
    run_dir, _ = finished_run  # trained with validation_split 0: on every training image
    distill = {"teacher": str(run_dir / "last.pth"), "alpha": 0.5, "temperature": 2.0}
    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder, distill=distill), "--validation_split", 10)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning: trainer.distill.teacher: " in proc.stdout + proc.stderr
    assert "this run's validation images among them" in proc.stdout + proc.stderr


def test_distill_mistakes_are_one_line(tmp_path, tiny_folder, finished_run):
    missing = tiny_config(tmp_path, tiny_folder, distill={"teacher": str(tmp_path / "nope.pth")})
    assert_one_line_error(run_cli("train.py", "-c", missing), "nope.pth")
    mixed = json.loads(missing.read_text())
    mixed["trainer"]["mix"] = {"type": "CutMix"}
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    assert_one_line_error(run_cli("train.py", "-c", tmp_path / "mixed.json"), "trainer.distill", "trainer.mix")
    bad = json.loads(missing.read_text())
    bad["trainer"]["distill"]["alpha"] = 2
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert_one_line_error(run_cli("train.py", "-c", tmp_path / "bad.json"), "trainer.distill.alpha")
    small = torch.load(finished_run[0] / "last.pth", weights_only=True)
    small["image_size"] = [16, 16]  # a teacher trained on other images than the data's
    torch.save(small, tmp_path / "small.pth")
    other = json.loads(missing.read_text())
    other["trainer"]["distill"]["teacher"] = str(tmp_path / "small.pth")
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert_one_line_error(run_cli("train.py", "-c", tmp_path / "other.json"), "small.pth", "16x16 images")


def test_step_benchmark_times_the_teachers_forward_pass_with_the_step(tmp_path, tiny_folder, finished_run):
    import argparse

    from benchmarks.step_benchmark import Setup, main

    run_dir, _ = finished_run
    config = tiny_config(tmp_path, tiny_folder, distill={"teacher": str(run_dir / "last.pth")})
    args = argparse.Namespace(
        config=[str(config)], train_images=100, valid_images=100, batches=1, rounds=1, threads=0, image_size=32
    )
    setup = Setup(str(config), args)
    teacher = torch.load(run_dir / "last.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(t, teacher[k]) for k, t in setup.distiller.teacher.state_dict().items())
    calls = []
    setup.distiller.teacher.register_forward_hook(lambda *a: calls.append(1))
    setup.time_once(args)
    assert len(calls) == 2 * len(set(setup.sizes))  # a warm-up and a timed batch at every image size
    assert main(args)[0]["epoch_s"] > 0


def test_teacher_net_is_a_dense_two_million_parameter_network_and_its_config_trains(tmp_path, tiny_folder):
    from model.teacher import TeacherNet
    from utils.errors import ArgumentError

    net = TeacherNet()
    assert 1_900_000 < net.num_params() < 2_100_000
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 10)  # progressive resizing's smallest size
    with pytest.raises(ArgumentError, match="widths"):
        TeacherNet(widths=[32, 64, 256])
    proc = run_cli(
        "train.py",
        "-c",
        "configs/teacher.json",
        "--data_dir",
        str(tiny_folder),
        "--epochs",
        "2",
        "--validation_split",
        "0",  # the teacher's own 5,000 held out are more than the tiny data
        "--set",
        "data_loader.args.num_workers=0",
        "--set",
        "data_loader.args.batch_size=8",
        "--set",
        "trainer.report=false",
        "--set",
        f"trainer.save_dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TeacherNet, 1,978,026 parameters" in proc.stdout + proc.stderr
    assert "Distilling from" not in proc.stdout + proc.stderr  # config.json's teacher does not teach itself


def test_fixed_views_are_the_same_pixels_every_epoch_and_carry_their_stored_values():
    import numpy as np

    from base.base_data_loader import ArrayDataset
    from data_loader.transforms import build_train_transform
    from data_loader.views import FixedViews

    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    augment = [{"type": "ShiftScaleRotate", "args": {"p": 1.0}}, {"type": "HorizontalFlip", "args": {"p": 0.5}}]
    dataset = ArrayDataset(images, np.arange(6) % 2, build_train_transform(augment, [0.5, 0.5, 0.5]))
    views = FixedViews(3, stored=torch.arange(6 * 3).view(6, 3, 1).float())
    dataset.views = views
    first = {(i, v): views.image(dataset, i, v) for i in range(6) for v in range(3)}
    assert not torch.equal(first[0, 0], first[0, 1])  # the views differ ...
    assert all(torch.equal(views.image(dataset, i, v), first[i, v]) for i, v in reversed(list(first)))  # ... and stay
    samples = dataset.__getitems__([(i, 7, 0, 1) for i in range(6)])
    chosen = views.choose(6, 7, 0)
    assert np.array_equal(chosen, views.choose(6, 7, 0)) and set(chosen.tolist()) <= {0, 1, 2}
    for i, (image, label, stored) in enumerate(samples):
        assert torch.equal(image, first[i, chosen[i]]) and label == i % 2 and stored.item() == 3 * i + chosen[i]
    assert not all(np.array_equal(views.choose(6, seed, 0), chosen) for seed in range(8, 12))  # new epochs, new draws


def test_distilling_from_fixed_views_computes_the_teachers_logits_once_and_resumes_exactly(
    tmp_path, tiny_folder, finished_run
):
    run_dir, _ = finished_run
    distill = {"teacher": str(run_dir / "last.pth"), "alpha": 0.5, "temperature": 2.0, "views": 2}
    # with an SWA epoch at the end: its BatchNorm pass reads the same loader, whose batches carry the stored logits
    swa = {"start": 3, "lr": 0.01, "bn_batches": 2}
    config = tiny_config(tmp_path, tiny_folder, distill=distill, epochs=3, swa=swa)
    proc = run_cli("train.py", "-c", config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Teacher logits of 2 fixed views of each of" in proc.stdout + proc.stderr
    assert "  view 2/2: " in proc.stdout + proc.stderr  # a line per view: no long silence
    (cache,) = (tmp_path / "saved" / "teacher_views").glob("*.pt")
    logits = torch.load(cache, weights_only=True)["logits"]
    assert logits.shape[1:] == (2, 10) and logits.abs().sum() > 0
    student = next(p for p in (tmp_path / "saved").glob("*/*") if p.parent.name != "teacher_views")
    straight = torch.load(student / "last.pth", weights_only=True)
    resumed = run_cli("train.py", "--resume", student / "checkpoint-epoch1.pth")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "read from" in resumed.stdout + resumed.stderr  # the cache, not the teacher again
    again = torch.load(student / "last.pth", weights_only=True)
    assert all(torch.equal(t, again["state_dict"][k]) for k, t in straight["state_dict"].items())


@pytest.mark.parametrize("world", [2, 3])
def test_under_torchrun_each_process_computes_its_share_of_the_views_and_the_shares_sum_to_the_whole(
    monkeypatch, world
):
    import numpy as np

    from base.base_data_loader import ArrayDataset
    from data_loader.transforms import NormalizeCollate, build_train_transform
    from data_loader.views import FixedViews
    from utils import distributed

    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    augment = [{"type": "ShiftScaleRotate", "args": {"p": 1.0}}]
    dataset = ArrayDataset(images, np.arange(7) % 2, build_train_transform(augment, [0.5, 0.5, 0.5]))
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4)).eval()
    distiller, views = Distiller(teacher, alpha=0.5, temperature=2.0), FixedViews(2)

    def logits():
        return distiller.view_logits(dataset, views, NormalizeCollate([0.5] * 3, [0.25] * 3), 3, torch.device("cpu"), 4)

    whole = logits()  # one process
    assert whole.shape == (7, 2, 4) and (whole != 0).all()
    monkeypatch.setattr(distributed, "world_size", lambda: world)
    monkeypatch.setattr(distributed, "all_reduce_sum", lambda t: t)  # each share alone, summed below
    shares = []
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        shares.append(logits())
    computed = [set(torch.nonzero(s.abs().sum((1, 2))).flatten().tolist()) for s in shares]
    assert sorted(i for c in computed for i in c) == list(range(7))  # every image once, by one process
    assert torch.allclose(sum(shares), whole, atol=1e-6)
