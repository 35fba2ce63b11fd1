"""Metrics by name. Each returns the *sum* over the batch of a per-image score, so that the
trainer divides by the exact image count of the epoch (never a mean of per-batch means).
Accuracies are in percent: an image scores 100 when right, 0 when wrong."""

import torch


def accuracy(output, target):
    return 100.0 * (output.argmax(dim=1) == target).sum()


def top_k_acc(output, target, k=3):
    top = torch.topk(output, k, dim=1).indices
    return 100.0 * (top == target[:, None]).any(dim=1).sum()
