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
