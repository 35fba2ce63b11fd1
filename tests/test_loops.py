"""trainer/loops.py: one epoch of training; a non-finite loss stops it before that batch's step."""

import math

import pytest
import torch

from trainer import train_one_epoch
from utils.errors import NonFiniteLoss, TrainingError


def test_non_finite_loss_stops_before_that_batch_steps():
    """On the CPU every batch is checked: the step of the first bad batch is never taken."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(3, 4), torch.tensor([0, 1, 0])) for _ in range(5)]
    calls = []

    def criterion(output, target):  # the 3rd batch's loss is NaN
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(output, target)
        return loss * float("nan") if len(calls) == 3 else loss

    reference = torch.nn.Linear(4, 2)
    reference.load_state_dict(model.state_dict())
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for images, target in batches[:2]:
        ref_opt.zero_grad()
        torch.nn.functional.cross_entropy(reference(images), target).backward()
        ref_opt.step()
    with pytest.raises(NonFiniteLoss) as err:
        train_one_epoch(model, criterion, [], optimizer, batches, torch.device("cpu"))
    assert (err.value.first, err.value.last, err.value.where) == (3, 3, "batch 3") and math.isnan(err.value.value)
    assert torch.equal(model.weight, reference.weight) and torch.equal(model.bias, reference.bias)


def test_non_finite_loss_checked_every_few_batches_names_the_window(monkeypatch):
    """On a GPU or under DDP the check runs every few batches: the error names the batches it covers."""
    import trainer.loops

    monkeypatch.setattr(trainer.loops, "finite_check_every", lambda device: 2)
    model = torch.nn.Linear(4, 2)
    batches = [(torch.randn(3, 4), torch.tensor([0, 1, 0])) for _ in range(5)]
    calls = []

    def criterion(output, target):  # the 3rd batch's loss is infinite
        calls.append(1)
        return torch.nn.functional.cross_entropy(output, target) * (float("inf") if len(calls) == 3 else 1)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLoss) as err:
        train_one_epoch(model, criterion, [], optimizer, batches, torch.device("cpu"))
    assert (err.value.first, err.value.last, err.value.where) == (3, 4, "batches 3-4")


def test_an_epoch_without_batches_is_an_error():
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainingError, match="the training loader gave no batch"):
        train_one_epoch(model, torch.nn.CrossEntropyLoss(), [], optimizer, [], torch.device("cpu"))


def test_a_step_hook_changes_the_loss_target_but_not_the_metrics_and_runs_after_each_step():
    """The guide's worked example (a label-noise hook): batch() gives the loss its targets, the metrics
    compare with the labels as loaded, after_step() runs once per optimizer step."""
    from model.metric import accuracy
    from trainer.hooks import StepHook

    class LabelNoise(StepHook):
        def __init__(self, p, num_classes):
            self.p, self.num_classes, self.steps = p, num_classes, 0

        def batch(self, images, target):
            flip = torch.rand(len(target), device=target.device) < self.p
            return images, torch.where(flip, torch.randint_like(target, self.num_classes), target)

        def after_step(self, model):
            self.steps += 1

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    batches = [(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])) for _ in range(4)]
    seen = []
    criterion = lambda output, target: seen.append(target.clone()) or torch.nn.functional.cross_entropy(output, target)  # noqa: E731
    noise = LabelNoise(1.0, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the metric below is of fixed weights
    log = train_one_epoch(
        model, criterion, [accuracy], optimizer, batches, torch.device("cpu"), hooks=[noise], accumulate=2
    )
    assert noise.steps == 2  # 4 batches, one step per 2
    assert any(not torch.equal(t, batches[0][1]) for t in seen)  # the loss saw the noisy labels
    plain = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches) / 24 * 100
    assert log["accuracy"] == pytest.approx(plain)  # the metric saw the labels as loaded
