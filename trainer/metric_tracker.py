"""Exact per-sample means of an epoch's loss and metrics (sums and counts, all-reduced under DDP)."""

import torch


class MetricTracker:
    """Sums over the samples of an epoch, kept on the device (no sync per batch).

    `update(key, total, n)` adds a batch's *sum* over its samples and its sample count, so the
    average is exact over the epoch (never a mean of per-batch means)."""

    def __init__(self, *keys):
        self.keys = keys
        self.reset()

    def reset(self):
        self._total = {k: 0.0 for k in self.keys}
        self._count = {k: 0 for k in self.keys}

    def update(self, key, total, n):
        self._total[key] = self._total[key] + (total.detach() if torch.is_tensor(total) else total)
        self._count[key] += n

    def count(self, key):
        return self._count[key]

    def all_reduce(self):
        """Under DDP: add up every rank's sums and counts (a no-op in a single process), so that
        `result()` is the exact mean over all ranks' samples, never a mean of per-rank means."""
        import utils.distributed as distributed

        if not distributed.is_distributed():
            return self
        device = next((t.device for t in self._total.values() if torch.is_tensor(t)), torch.device("cpu"))
        if torch.distributed.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        packed = torch.tensor(
            [float(self._total[k]) for k in self.keys] + [float(self._count[k]) for k in self.keys],
            dtype=torch.float64,
            device=device,
        )
        distributed.all_reduce_sum(packed)
        n = len(self.keys)
        self._total = {k: float(packed[i]) for i, k in enumerate(self.keys)}
        self._count = {k: int(packed[n + i]) for i, k in enumerate(self.keys)}
        return self

    def result(self):
        return {k: float(self._total[k]) / self._count[k] if self._count[k] else float("nan") for k in self.keys}
