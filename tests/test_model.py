import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from config.parser import ConfigParser
from conftest import REPO
from model.blocks import ConvBNReLU, DepthwiseSeparableConv, channels_last_grad
from model.model import DilatedNet
from model.spec import check_constraints, describe, empirical_receptive_field, has_gap
from model.trace import count_depthwise_separable, count_dilated, has_maxpool, receptive_field, trace

CONSTRAINTS = ConfigParser(json.loads((REPO / "config.json").read_text()))["constraints"]
SHIPPED_ARGS = json.loads((REPO / "config.json").read_text())["arch"]["args"]

MODELS = {
    "shipped": lambda: DilatedNet(**SHIPPED_ARGS),
    "default": lambda: DilatedNet(),
    "narrow": lambda: DilatedNet(widths=(16, 32, 48, 64), depths=(2, 1, 2, 1), dilations=(1, 1, 2, 4)),
    "deep": lambda: DilatedNet(
        widths=(32, 48, 64, 96), depths=(3, 2, 3, 2), dilations=(1, 2, 2, 4), mid_act=False, c1_ratio=2
    ),
}


@pytest.fixture(params=sorted(MODELS))
def net(request):
    torch.manual_seed(0)
    return MODELS[request.param]()


def test_output_is_raw_logits_per_class(net):
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert not torch.allclose(out.softmax(1).sum(1), out.sum(1))  # not already probabilities


def test_meets_every_constraint(net):
    checks = check_constraints(net, CONSTRAINTS)
    assert [c.rule for c in checks if not c.ok] == []
    assert sum(p.numel() for p in net.parameters()) < 100_000


def test_analytic_receptive_field_equals_empirical(net):
    rf = receptive_field(trace(net))
    assert rf > 52
    assert empirical_receptive_field(net) == rf


def test_shipped_network_figures():
    net = MODELS["shipped"]()
    layers = trace(net)
    assert sum(p.numel() for p in net.parameters()) == 99_146
    assert receptive_field(layers) == 65
    assert count_depthwise_separable(layers) == 6 and count_dilated(layers) == 1
    assert has_gap(net, layers) and not has_maxpool(layers)
    text, failed = describe(net, CONSTRAINTS)
    assert failed == [] and "Total params: 99,146" in text and text.count("[PASS]") == 6  # no augmentations given


@pytest.mark.parametrize(
    "layers, expected",
    [
        ([nn.Conv2d(3, 4, 3, padding=1)] * 1, 3),
        ([nn.Conv2d(3, 3, 3, padding=1)] * 3, 7),
        ([nn.Conv2d(3, 3, 3, padding=2, dilation=2)] * 2, 9),
        ([nn.Conv2d(3, 3, 3, stride=2, padding=1), nn.Conv2d(3, 3, 3, padding=1)], 7),
        ([nn.Conv2d(3, 3, 3, stride=2, padding=2, dilation=2), nn.Conv2d(3, 3, 3, padding=2, dilation=2)], 13),
        ([nn.Conv2d(3, 3, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(3, 3, 3, padding=1)], 8),
    ],
)
def test_receptive_field_of_known_chains(layers, expected):
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
    assert receptive_field(trace(net)) == expected
    assert empirical_receptive_field(net) == expected


class ClaimsButDoesNot(nn.Module):
    """A common first attempt: names that promise dilation and separable convolutions,
    max-pooling, a flatten+linear head and a receptive field far below its claim."""

    def __init__(self):
        super().__init__()
        self.dilated_conv1 = nn.Conv2d(3, 32, 3, padding=1)  # dilation 1 despite the name
        self.depthwise_separable = nn.Conv2d(32, 64, 3, padding=1)  # a plain conv
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 16 * 16, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.depthwise_separable(F.relu(self.dilated_conv1(x)))))
        return self.fc(torch.flatten(F.relu(self.conv3(x)), 1))


class FunctionalMaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = F.max_pool2d(self.stem(x), 2)  # no module to find: only the trace sees it
        x = self.pw(self.dw(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_checker_rejects_a_network_that_only_claims_the_spec():
    checks = {c.rule: c for c in check_constraints(ClaimsButDoesNot(), CONSTRAINTS)}
    failed = {rule for rule, c in checks.items() if not c.ok}
    assert failed == {
        "max_params",
        "min_receptive_field",
        "min_depthwise_separable",
        "min_dilated",
        "require_gap",
        "forbid_maxpool",
    }
    assert checks["min_receptive_field"].actual == "10"
    assert checks["min_dilated"].actual == "0" and checks["min_depthwise_separable"].actual == "0"


def test_checker_sees_functional_max_pool_and_counts_separable_pairs():
    net = FunctionalMaxPool()
    layers = trace(net)
    assert has_maxpool(layers)
    assert count_depthwise_separable(layers) == 1 and count_dilated(layers) == 1
    assert has_gap(net, layers)


def test_blocks():
    block = DepthwiseSeparableConv(8, 16, stride=2, dilation=2)
    assert block(torch.randn(1, 8, 16, 16)).shape == (1, 16, 8, 8)
    assert block.depthwise.groups == 8 and block.depthwise.dilation == (2, 2) and block.pointwise.kernel_size == (1, 1)
    residual = DepthwiseSeparableConv(8, 8, dilation=2, residual=True)
    assert residual(torch.randn(1, 8, 16, 16)).shape == (1, 8, 16, 16)
    with pytest.raises(ValueError):
        DepthwiseSeparableConv(8, 16, residual=True)
    assert ConvBNReLU(3, 8, stride=2, dilation=2)(torch.randn(1, 3, 32, 32)).shape == (1, 8, 16, 16)
    plain = DepthwiseSeparableConv(8, 16, mid_act=False)
    assert isinstance(plain.mid, nn.Identity) and plain(torch.randn(1, 8, 8, 8)).shape == (1, 16, 8, 8)


def test_channels_last_grad_is_identity_with_a_channels_last_gradient():
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = channels_last_grad(x)
    assert torch.equal(y, x)
    y.mean((2, 3)).sum().backward()  # the backward of a mean is an expanded, not channels_last, gradient
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x.grad, torch.full_like(x, 1 / 64))
    plain = torch.randn(2, 4, 8, 8)
    assert channels_last_grad(plain) is plain  # contiguous input, or no grad: untouched


def test_channels_last_training_matches_contiguous():
    torch.manual_seed(0)
    a = MODELS["shipped"]()
    b = MODELS["shipped"]().to(memory_format=torch.channels_last)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3, 32, 32)
    a(x).square().sum().backward()
    b(x.contiguous(memory_format=torch.channels_last)).square().sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-4, rtol=1e-3), name


def test_describing_a_model_changes_nothing_in_it():
    """The summary and the checks run before training: they must not move BatchNorm statistics,
    draw from the random generator or leave the model in another mode."""
    torch.manual_seed(0)
    net = MODELS["shipped"]()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    describe(net, CONSTRAINTS)
    assert net.training and torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_required_augmentations_rule():
    from model.spec import check_augmentations

    required = CONSTRAINTS["required_augmentations"]
    shipped = json.loads((REPO / "config.json").read_text())["data_loader"]["args"]["augmentations"]
    assert check_augmentations(shipped, required).ok
    affine = [{"type": "Affine"} if e["type"] == "ShiftScaleRotate" else e for e in shipped] + [{"type": "Blur"}]
    assert check_augmentations(affine, required).ok  # Affine with the same ranges is allowed, extras too
    without_gray = [e for e in shipped if e["type"] != "ToGray"]
    check = check_augmentations(without_gray, required)
    assert not check.ok and check.actual == "missing ToGray"
    text, failed = describe(MODELS["shipped"](), CONSTRAINTS, augmentations=without_gray)
    assert [c.rule for c in failed] == ["required_augmentations"] and "[FAIL] required_augmentations" in text


def test_dead_channels_are_the_constant_inputs_of_batchnorm(tmp_path, capsys):
    from checkpoint.schema import load_checkpoint
    from model.dead_channels import dead_channels
    from tools import dead_channels as tool

    net = DilatedNet()
    bn = net.c3[1].mid[0]
    bn.running_var[:40] = 0.0  # as in a network whose ReLU before C3's second block never fires
    rows = dict((name, (dead, n)) for name, dead, n in dead_channels(net))
    assert rows["c3.1.mid.0"] == (40, 144) and sum(d for d, _ in rows.values()) == 40
    ckpt = load_checkpoint(REPO / "pretrained" / "cifar10_dilatednet.pth")  # a checkpoint of this network
    ckpt["config"]["arch"]["args"], ckpt["state_dict"] = {}, net.state_dict()
    path = tmp_path / "w.pth"
    torch.save(ckpt, path)
    assert tool.cli(["--resume", str(path)]) in (None, 0)
    assert "c3.1.mid.0                 40 of  144" in capsys.readouterr().out


def test_a_network_far_too_large_is_one_line_before_any_module_is_built(tmp_path, tiny_folder):
    """depths [2, 2, 3, 2000000] built two million modules for minutes; now one line naming the key,
    from a config and from a checkpoint's config alike."""
    import json

    from conftest import assert_one_line_error, run_cli, tiny_config

    config = tiny_config(tmp_path, tiny_folder)
    edited = json.loads(config.read_text())
    edited["arch"]["args"]["depths"] = [2, 2, 3, 2_000_000]
    config.write_text(json.dumps(edited))
    assert_one_line_error(run_cli("train.py", "-c", config), "arch.args: 2,000,007 blocks in all, more than the 256")
    edited["arch"]["args"].update(depths=[2, 2, 3, 1], widths=[64, 64, 144, 100_000])
    config.write_text(json.dumps(edited))
    assert_one_line_error(run_cli("train.py", "-c", config), "arch.args: a layer of 100,000 channels")


def test_a_checkpoint_whose_config_asks_for_a_network_far_too_large_is_one_line_naming_it(finished_run, tmp_path):
    from checkpoint.schema import load_checkpoint
    from conftest import assert_one_line_error, run_cli

    run_dir, _ = finished_run
    ckpt = load_checkpoint(run_dir / "last.pth")
    ckpt["config"]["arch"]["args"]["depths"] = [2, 2, 3, 2_000_000]
    torch.save(ckpt, tmp_path / "deep.pth")
    for script in ("test.py", "predict.py"):
        proc = run_cli(script, "--resume", tmp_path / "deep.pth", *([tmp_path] if script == "predict.py" else []))
        assert_one_line_error(proc, f"{tmp_path / 'deep.pth'}: its config's arch.args: 2,000,007 blocks in all")


class TimmStyleSE(nn.Module):
    """Squeeze-excite as timm writes it: an adaptive pool and two 1x1 convolutions on the pooled map."""

    def __init__(self, channels, hidden):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(self.pool(x)))))


class MobileNetV2SE(nn.Module):
    """stem 3x3 -> 3 x (expand 1x1 -> depthwise 3x3 (stride 2, then dilation 2) -> SE -> project 1x1)
    -> GAP -> linear."""

    def __init__(self):
        super().__init__()
        layers = [nn.Conv2d(3, 16, 3, padding=1)]
        width = 16
        for out, stride, dilation in ((24, 2, 1), (32, 2, 1), (48, 1, 2)):
            mid = width * 3
            layers += [
                nn.Conv2d(width, mid, 1),
                nn.ReLU(),
                nn.Conv2d(mid, mid, 3, stride, dilation, dilation, groups=mid),
                nn.ReLU(),
                TimmStyleSE(mid, mid // 4),
                nn.Conv2d(mid, out, 1),
            ]
            width = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))

    def forward(self, x):
        return self.head(self.features(x))


def test_squeeze_excite_pools_neither_end_the_field_nor_break_a_separable_pair():
    net = MobileNetV2SE()
    layers = trace(net)
    assert count_depthwise_separable(layers) == 3
    assert [l.op for l in layers].count("squeeze") == 3 and [l.op for l in layers].count("gap") == 1
    # stem 3 (+2), depthwise s2 at jump 1 (+2) -> jump 2, depthwise s2 at jump 2 (+4) -> jump 4,
    # depthwise dilation 2 at jump 4 (+16): 1 + 2 + 2 + 4 + 16
    assert receptive_field(layers) == 25 == empirical_receptive_field(net)
    checks = {c.rule: c.ok for c in check_constraints(net, {**CONSTRAINTS, "min_receptive_field": 25})}
    assert checks["require_gap"] and checks["min_depthwise_separable"] and checks["min_receptive_field"]
