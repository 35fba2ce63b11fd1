"""Network shapes as config values: StageNet's blocks, re-parameterisation (RepConvBN), and the spec
check judging inverted-residual and squeeze-excite shapes by what they compute."""

import json

import pytest
import torch
import torch.nn as nn

from config.parser import ConfigParser
from config.reading import load_config
from conftest import REPO
from model.blocks import InvertedResidual, RepConvBN
from model.model import DilatedNet
from model.spec import check_constraints, empirical_receptive_field
from model.stagenet import StageNet
from model.trace import count_depthwise_separable, receptive_field, trace
from utils.errors import ArgumentError

CONSTRAINTS = ConfigParser(json.loads((REPO / "config.json").read_text()))["constraints"]
SHAPES = sorted((REPO / "configs" / "shapes").glob("*.json"))


def randomise_batchnorm(model):
    """BatchNorm statistics and affine parameters far from their identity defaults."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


@pytest.mark.parametrize(
    "in_ch, out_ch, stride, dilation, groups",
    [(3, 8, 1, 1, 1), (8, 8, 1, 1, 1), (8, 16, 2, 1, 1), (8, 8, 1, 2, 8), (8, 8, 2, 1, 8), (16, 16, 1, 4, 16)],
)
def test_rep_conv_fuses_into_one_convolution_with_equal_outputs(in_ch, out_ch, stride, dilation, groups):
    torch.manual_seed(0)
    block = randomise_batchnorm(RepConvBN(in_ch, out_ch, 3, stride, dilation, groups)).eval()
    x = torch.randn(2, in_ch, 16, 16)
    before = block(x)
    block.fuse()
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (3, 3) and convs[0].bias is not None
    assert (block(x) - before).abs().max() < 1e-5


def test_a_reparameterised_network_keeps_its_outputs_and_fits_the_budget_in_both_forms():
    cfg = ConfigParser(load_config(REPO / "configs" / "shapes" / "d_rep.json"))
    torch.manual_seed(0)
    net = randomise_batchnorm(cfg.init_obj("arch")).eval()
    x = torch.randn(4, 3, 32, 32)
    before, training_params = net(x), net.num_params()
    checks = {c.rule: c for c in check_constraints(net, CONSTRAINTS)}
    assert all(c.ok for c in checks.values()), checks
    assert training_params < CONSTRAINTS["max_params"]
    net.reparameterize()
    assert (net(x) - before).abs().max() < 1e-5
    assert net.num_params() < training_params
    assert all(m.fused is not None for m in net.modules() if isinstance(m, RepConvBN))
    # the spec judged the branched network by its fused form
    assert str(receptive_field(trace(net))) == checks["min_receptive_field"].actual


def test_stagenet_default_is_the_shipped_dilatednet():
    shipped = DilatedNet(**json.loads((REPO / "config.json").read_text())["arch"]["args"])
    net = StageNet()
    assert net.num_params() == shipped.num_params()
    ops = lambda m: [(l.op, l.kernel, l.stride, l.dilation, l.in_channels, l.out_channels) for l in trace(m)]  # noqa: E731
    assert ops(net) == ops(shipped)


@pytest.mark.parametrize("path", SHAPES, ids=lambda p: p.stem)
def test_every_candidate_shape_meets_the_spec_and_its_field_is_measured(path):
    cfg = ConfigParser(load_config(path))
    torch.manual_seed(0)
    net = cfg.init_obj("arch")
    checks = check_constraints(net, CONSTRAINTS)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert empirical_receptive_field(net) == receptive_field(trace(net))


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


def test_inverted_residual_adds_its_input_only_when_the_shapes_allow():
    assert InvertedResidual(16, 16, expand=2).residual
    assert not InvertedResidual(16, 24, expand=2).residual
    assert not InvertedResidual(16, 16, expand=2, stride=2).residual
    assert InvertedResidual(16, 16, expand=1).expand.__class__ is nn.Identity


@pytest.mark.parametrize(
    "args, key",
    [
        ({"stages": [[[16, 1, 1, 0]]] * 3}, "stages"),
        ({"stages": [[[16, 1, 1, 2]], [[16, 1, 1, 1]], [[16, 1, 1, 1]], [[16, 1, 1, 1]]]}, "stages"),
        ({"stages": [[[16, 3, 1, 0]], [[16, 1, 1, 1]], [[16, 1, 1, 1]], [[16, 1, 1, 1]]]}, "stages"),
        ({"act": "tanh"}, "act"),
        ({"se": -1}, "se"),
    ],
)
def test_stagenet_refuses_bad_arguments_by_name(args, key):
    with pytest.raises(ArgumentError, match=key):
        StageNet(**args)


def test_a_reparameterised_run_is_tested_and_exported_in_its_fused_form(tmp_path, tiny_folder):
    """The checkpoint keeps the branches (a resume needs them); test.py, predict and ONNX run the fused
    network, whose outputs are the branched network's."""
    from conftest import run_cli, tiny_config
    from deploy.loading import load_network

    path = tiny_config(tmp_path, tiny_folder, epochs=1)
    config = json.loads(path.read_text())
    config["lr_scheduler"] = None
    config["arch"] = {
        "type": "StageNet",
        "args": {
            "rep": True,
            "stages": [[[8, 1, 1, 0], [16, 2, 1, 0]], [[16, 1, 2, 1]], [[24, 2, 1, 2]], [[24, 1, 4, 1]]],
        },
    }
    config["constraints"]["min_receptive_field"] = 1
    path.write_text(json.dumps(config))
    assert (proc := run_cli("train.py", "-c", path)).returncode == 0, proc.stdout + proc.stderr
    last = next((tmp_path / "saved").glob("*/*")) / "last.pth"
    assert any(".branches." in key for key in torch.load(last, weights_only=True)["state_dict"])
    fused = load_network(last).model
    assert not any(isinstance(m, RepConvBN) and m.fused is None for m in fused.modules())
    branched = ConfigParser(config).init_obj("arch")
    branched.load_state_dict(torch.load(last, weights_only=True)["state_dict"])
    x = torch.randn(4, 3, 32, 32)
    assert (fused(x) - branched.eval()(x)).abs().max() < 1e-5
    onnx = run_cli("export.py", "--resume", last, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert onnx.returncode == 0, onnx.stdout + onnx.stderr
