"""One training step on a copy, before the run folder exists: values that pass the config's checks
but fail only when used (a label smoothing of 1.5, top-k with k above the class count, a loss that
cannot be called, an augmentation that needs inputs it is not given) stop the run in one line naming
their key, instead of a traceback at the first batch after files were written.

The probe changes nothing: it trains a deep copy of the network (BatchNorm statistics included),
steps a fresh optimizer of that copy only (an optimizer that cannot take these gradients, such as
SparseAdam, is one line) and restores every random generator it may draw from."""

import contextlib
import copy
import random

import numpy as np
import torch

from utils.errors import ConfigError

# what a value from the config can raise when it is called; anything else is a bug and keeps its traceback
USE_ERRORS = (RuntimeError, ValueError, TypeError, NotImplementedError, KeyError, IndexError, AttributeError)


@contextlib.contextmanager
def _same_random_state(device):
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


@contextlib.contextmanager
def _named(key):
    """Turn an error of USE_ERRORS raised inside the block into a ConfigError naming `key`."""
    try:
        yield
    except USE_ERRORS as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"{key}: fails when used ({type(e).__name__}: {reason})") from None


def probe_step(model, criterion, metrics, data_loader, device, make_optimizer=None, images=4):
    """Augment `images` training pictures, collate them, and run the network's forward and backward,
    the loss and every metric on them (on a copy of the network); a ConfigError naming the config
    key whose value failed. make_optimizer(parameters): the run's optimizer over them, stepped once
    on the copy's. A loader without a dataset of its own (or an empty one) is not probed."""
    dataset, collate = getattr(data_loader, "dataset", None), getattr(data_loader, "collate_fn", None)
    if dataset is None or collate is None or len(dataset) == 0:
        return
    with _same_random_state(device):
        with _named("data_loader.args.augmentations"):
            batch = collate([dataset[i] for i in range(min(images, len(dataset)))])
        inputs, target = batch[0].to(device), batch[1].to(device)
        network = copy.deepcopy(model).train()
        output = network(inputs).float()
        with _named("loss"):
            loss = criterion(output, target)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise TypeError(f"expected a single-number tensor, got {type(loss).__name__}")
        loss.backward()
        if make_optimizer is not None:
            with _named("optimizer"):
                make_optimizer(network.parameters()).step()
        for metric in metrics:
            with _named(f"metrics: {metric.__name__}"), torch.no_grad():
                float(metric(output.detach(), target))
