"""What a training epoch shows while it runs (rank 0 only): on a terminal a tqdm bar with images/s,
the running loss and the time left in the epoch and in the run; when the output is a file (nohup, CI,
info.log) a plain line every `every` seconds instead, so logs stay readable."""

import sys
import time

from tqdm import tqdm

from utils import distributed


def clock(seconds):
    """Seconds as h:mm:ss (or m:ss under an hour)."""
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Per-batch progress of one epoch of `batches` batches. epochs_after: epochs of the run still to
    come after this one; epoch_seconds: the wall seconds of one whole epoch so far (their mean), for the
    run's time left (None: this epoch's own pace). logger: where plain lines go (None: nowhere)."""

    def __init__(self, batches, desc, *, epochs_after=0, epoch_seconds=None, logger=None, every=30.0, stream=None):
        self.batches, self.desc, self.epochs_after, self.epoch_seconds = batches, desc, epochs_after, epoch_seconds
        self.logger, self.every = logger, every
        self.start = self.last = time.perf_counter()
        self.batch = self.images = 0
        self.loss_sum = None  # a tensor on the loss's device: read (a sync) only when shown
        stream = stream or sys.stderr
        on = distributed.is_main()
        self.bar = tqdm(total=batches, desc=desc, leave=False, file=stream) if on and stream.isatty() else None
        self.lines = on and self.bar is None and logger is not None

    def update(self, images, loss):
        """After each batch: its image count and its (mean) loss tensor."""
        self.batch += 1
        self.images += images
        weighted = loss.detach().float() * images
        self.loss_sum = weighted if self.loss_sum is None else self.loss_sum + weighted
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(1)
            if now - self.last >= 1.0 or self.batch == self.batches:
                self.bar.set_postfix_str(self.status(now), refresh=self.batch == self.batches)
                self.last = now
        elif self.lines and now - self.last >= self.every and self.batch < self.batches:
            self.logger.info(f"{self.desc}: batch {self.batch}/{self.batches}, {self.status(now)}")
            self.last = now

    def status(self, now):
        """images/s, running loss, time left in the epoch and in the run."""
        elapsed = now - self.start
        epoch_left = elapsed / self.batch * (self.batches - self.batch)
        per_epoch = self.epoch_seconds if self.epoch_seconds else elapsed / self.batch * self.batches
        run_left = epoch_left + self.epochs_after * per_epoch
        return (
            f"{self.images / max(elapsed, 1e-9):,.0f} img/s, loss {float(self.loss_sum) / self.images:.4f}, "
            f"left: epoch {clock(epoch_left)}, run {clock(run_left)}"
        )

    def close(self):
        if self.bar is not None:
            self.bar.close()
