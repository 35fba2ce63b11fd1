"""The options taken from airbench: a frozen patch-whitening first layer, identity (dirac)
initialisation, the normalisation layers' parameters as a group of their own, Lookahead, and
multi-crop test-time augmentation."""

import json

import pytest
import torch
import torch.nn as nn

from conftest import REPO
from model.blocks import DepthwiseSeparableConv, PatchWhitening
from model.model import DilatedNet
from model.spec import describe
from model.tta import tta_logits, views
from parse_config import ConfigParser
from trainer.lookahead import Lookahead
from trainer.optim import build_optimizer
from trainer.schedulers import build_lr_scheduler
from utils.errors import ArgumentError, ConfigError

SHIPPED = json.loads((REPO / "config.json").read_text())


def correlated_images(n=64, size=16, seed=0):
    """Images whose neighbouring pixels and channels are strongly correlated, as in photographs."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, size // 2, size // 2, generator=g).repeat_interleave(2, 2).repeat_interleave(2, 3)
    return base * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1) + 0.1 * torch.randn(n, 3, size, size, generator=g)


def test_whitening_layer_decorrelates_patches_and_is_frozen():
    layer = PatchWhitening(3, 8)
    images = correlated_images()
    layer.fit(images)
    out = nn.functional.conv2d(images, layer.weight)  # without the bias
    top = out[:, :4].permute(1, 0, 2, 3).reshape(4, -1)
    covariance = top @ top.T / top.shape[1]
    assert torch.allclose(covariance, torch.eye(4), atol=0.02)  # unit variance, no correlation
    assert torch.equal(layer.weight[4:], -layer.weight[:4])  # each filter once with each sign
    assert not layer.weight.requires_grad and layer.bias.requires_grad
    with pytest.raises(ValueError, match="even number of channels up to 24"):
        PatchWhitening(3, 26)


def test_whitened_network_keeps_the_spec_and_counts_the_frozen_filters():
    plain, whitened = DilatedNet(**SHIPPED["arch"]["args"]), DilatedNet(**SHIPPED["arch"]["args"], whiten=True)
    # the 3x3 conv + BatchNorm (16x3x9 + 2x16) become 16x3x4 frozen filters and 16 biases
    assert whitened.num_params() == plain.num_params() - (432 + 32) + (192 + 16)
    summary, failed = describe(whitened, ConfigParser(SHIPPED)["constraints"])
    assert not failed, summary
    whitened.fit_whitening(correlated_images(size=32))
    config = ConfigParser(SHIPPED)
    optimizer = build_optimizer(config, whitened)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(whitened.c1[0][0].weight) not in trained and id(whitened.c1[0][0].bias) in trained
    with pytest.raises(ArgumentError, match="whiten"):
        DilatedNet(whiten=True, c1_ratio=2)  # 32 channels: more than 2 x 12 eigenvectors


def test_dirac_init_makes_each_depthwise_conv_an_identity_and_pointwise_a_pass_through():
    net = DilatedNet(dirac=True)
    x = torch.randn(2, 144, 8, 8)
    for block in net.modules():
        if isinstance(block, DepthwiseSeparableConv):
            conv = block.depthwise
            inputs, stride = x[:, : conv.in_channels], conv.stride[0]
            assert torch.equal(conv(inputs), inputs[:, :, ::stride, ::stride])  # strided: every other pixel
            w = block.pointwise.weight[:, :, 0, 0]
            n = min(w.shape)
            assert torch.equal(w[:n, :n], torch.eye(n))
    assert net(torch.randn(2, 3, 32, 32)).isfinite().all()


def test_norm_group_has_its_own_lr_weight_decay_and_momentum_through_the_schedule():
    config = json.loads(json.dumps(SHIPPED))
    config["trainer"]["norm"] = {"lr_scale": 64.0, "weight_decay": 0.0, "momentum": 0.4, "freeze_scale": True}
    config = ConfigParser(config)
    net = DilatedNet(**config["arch"]["args"])
    optimizer = build_optimizer(config, net)
    others, norm = optimizer.param_groups
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {id(p) for p in norm["params"]} == {id(m.bias) for m in bn}  # scales frozen: biases only
    assert all(m.momentum == 0.4 and not m.weight.requires_grad for m in bn)
    assert norm["weight_decay"] == 0.0 and others["weight_decay"] == 5e-4
    scheduler = build_lr_scheduler(config, optimizer, steps_per_epoch=10)
    peak = 0.0
    for _ in range(500):
        assert norm["lr"] == pytest.approx(64 * others["lr"])
        peak = max(peak, others["lr"])
        optimizer.step()
        scheduler.step()
    assert peak == pytest.approx(config["optimizer"]["args"]["lr"], rel=0.01)


def test_norm_section_is_checked_when_read():
    config = json.loads(json.dumps(SHIPPED))
    config["trainer"]["norm"] = {"lr_scale": 0}
    with pytest.raises(ConfigError, match=r"^trainer.norm.lr_scale: expected a number > 0"):
        ConfigParser(config)


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


def test_lookahead_pulls_the_weights_back_every_k_steps_and_ends_on_the_slow_ones():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    lookahead = Lookahead(net, every=2, alpha=0.5, ramp=False, total_steps=5)

    def weights():
        return [t.clone() for t in net.state_dict().values()]

    def sgd_step():
        """One step; returns the fast weights the optimizer reached, before the lookahead."""
        optimizer.zero_grad()
        net(torch.randn(4, 3)).square().sum().backward()
        optimizer.step()
        reached = weights()
        lookahead.step()
        return reached

    start = weights()
    assert all(torch.equal(a, b) for a, b in zip(sgd_step(), weights()))  # step 1: nothing pulled
    reached = sgd_step()  # step 2: halfway back from the fast weights to the start
    halfway = [(a + b) / 2 for a, b in zip(start, reached)]
    assert all(torch.allclose(a, b) for a, b in zip(weights(), halfway))
    sgd_step()
    sgd_step()
    sgd_step()  # step 5, the last: the slow weights (the step-4 pull) are the result, unpulled
    assert all(torch.equal(t, s) for t, s in zip(weights(), lookahead.slow))
    ramped = Lookahead(net, every=2, alpha=0.2, ramp=True, total_steps=100)
    assert ramped.fraction() == 1.0  # no pull at the start
    ramped.steps = 100
    assert ramped.fraction() == pytest.approx(0.2)


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
