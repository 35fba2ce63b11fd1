"""Optimisation options of the step (gradient clipping, accumulation), multi-crop test-time
augmentation, and the options that were removed after losing on record (a config that turns one on
is one line; a saved config with it off still loads)."""

import json

import pytest
import torch
import torch.nn as nn

from config.parser import ConfigParser
from conftest import REPO
from model.tta import tta_logits, views
from utils.errors import ConfigError

SHIPPED = json.loads((REPO / "config.json").read_text())


def test_multicrop_tta_averages_mirrors_and_one_pixel_shifts():
    images = torch.randn(2, 3, 6, 6)
    for kind, passes in (("none", 1), ("flip", 2), ("multicrop", 6)):
        parts = views(images, kind)
        assert len(parts) == passes and sum(w for w, _ in parts) == pytest.approx(1.0)
        assert all(v.shape == images.shape for _, v in parts)
    # a "network" that reads one pixel: multicrop averages it with its mirror and shifted neighbours
    pixel = tta_logits(lambda x: x[:, 0, 2, 2], images, "multicrop")
    x = images[:, 0]
    expected = (x[:, 2, 2] + x[:, 2, 3]) / 4 + (x[:, 1, 1] + x[:, 1, 2]) / 8 + (x[:, 3, 3] + x[:, 3, 4]) / 8
    assert torch.allclose(pixel, expected)
    with pytest.raises(ValueError, match="expected one of none, flip, multicrop"):
        views(images, "rotate")


def test_clip_grad_norm_bounds_the_step():
    """With clip_grad_norm, SGD (no momentum) moves the weights by at most lr x the clip norm."""
    from trainer.loops import train_one_epoch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    batches = [(torch.randn(8, 3, 2, 2) * 100, torch.randint(0, 3, (8,)))]
    for clip, bounded in ((None, False), (0.01, True)):
        before = [p.detach().clone() for p in model.parameters()]
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        train_one_epoch(model, nn.CrossEntropyLoss(), [], optimizer, batches, torch.device("cpu"), clip_grad_norm=clip)
        moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)]).norm()
        assert (moved <= 0.01 + 1e-6) == bounded, (clip, moved)


def test_accumulating_two_half_batches_is_one_step_over_the_whole_batch():
    """trainer.accumulate: the gradients of k micro-batches, each loss divided by k, summed into one
    step: the same weights as one step over the k-times larger batch (a network without BatchNorm)."""
    from trainer.loops import train_one_epoch

    torch.manual_seed(0)
    batch = (torch.randn(8, 3, 2, 2), torch.randint(0, 3, (8,)))
    halves = [(batch[0][:4], batch[1][:4]), (batch[0][4:], batch[1][4:])]
    results = []
    for loader, k in (([batch], 1), (halves, 2)):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        log = train_one_epoch(model, nn.CrossEntropyLoss(), [], optimizer, loader, torch.device("cpu"), accumulate=k)
        results.append((torch.cat([p.detach().flatten() for p in model.parameters()]), log["loss"]))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6) and results[0][1] == pytest.approx(results[1][1])


def test_an_accumulating_run_keeps_the_global_batch_and_the_schedule(tmp_path, tiny_folder):
    from conftest import run_cli, tiny_config

    path = tiny_config(tmp_path, tiny_folder, epochs=2, accumulate=2)
    proc = run_cli("train.py", "-c", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = torch.load(next((tmp_path / "saved").glob("*/*")) / "last.pth", weights_only=True)
    assert last["lr_scheduler"]["total_steps"] == 2 * 5  # 40 images, batch 8: 5 steps an epoch, as without it
    assert last["lr_scheduler"]["last_epoch"] == 10


def test_an_accumulation_that_does_not_divide_the_batch_is_one_line(tmp_path, tiny_folder):
    from conftest import assert_one_line_error, run_cli, tiny_config

    proc = run_cli("train.py", "-c", tiny_config(tmp_path, tiny_folder, accumulate=3))
    assert_one_line_error(proc, "trainer.accumulate: 3 does not divide data_loader.args.batch_size 8")


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: c["trainer"].update(lookahead={"every": 5}), "trainer.lookahead"),
        (lambda c: c["trainer"].update(norm={"lr_scale": 64}), "trainer.norm"),
        (lambda c: c["trainer"].update(selective_backprop={"keep": 0.5}), "trainer.selective_backprop"),
        (lambda c: c["arch"]["args"].update(whiten=True), "arch.args.whiten"),
        (lambda c: c["arch"]["args"].update(dirac=True), "arch.args.dirac"),
    ],
)
def test_a_removed_option_that_is_on_is_one_line_and_one_that_is_off_is_dropped(change, key):
    import copy

    config = copy.deepcopy(SHIPPED)
    change(config)
    with pytest.raises(ConfigError, match=rf"^{key}: this option was removed .*docs/experiments.md"):
        ConfigParser(config)
    old = copy.deepcopy(SHIPPED)  # as checkpoints written before the removal hold them
    old["trainer"].update(lookahead=None, norm=None, selective_backprop=None)
    old["arch"]["args"].update(whiten=False, dirac=False)
    parsed = ConfigParser(old)
    assert "lookahead" not in parsed["trainer"] and "whiten" not in parsed["arch"]["args"]
