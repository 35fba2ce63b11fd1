import logging
import threading

from logger.keys import EPOCH, LR, is_val_key, train_key


class TensorboardWriter:
    """A SummaryWriter in the run folder, or a no-op when disabled. It creates its events file at the
    first value written, not before (a run that fails its checks writes nothing). log_dir: a path,
    or a callable giving it then. A write that fails (a full disk) is one warning, and TensorBoard is
    off for the rest of the run, as info.log is: the console, info.log and metrics.csv have the figures."""

    def __init__(self, log_dir, enabled=True):
        self._log_dir, self.enabled, self._writer = log_dir, enabled, None

    @property
    def writer(self):
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            _quiet_writer_threads()
            self._writer = SummaryWriter(str(self._log_dir() if callable(self._log_dir) else self._log_dir))
        return self._writer

    def _write(self, method, *args, **kwargs):
        if not self.enabled:
            return
        try:
            getattr(self.writer, method)(*args, **kwargs)
        except OSError as e:  # the writer thread's error, raised again at the next write
            self._give_up(e)

    def _give_up(self, error):
        folder = self._log_dir() if callable(self._log_dir) else self._log_dir
        logging.getLogger("trainer").warning(
            f"warning: {folder}: cannot write TensorBoard's events ({error.strerror or error}); TensorBoard stops "
            "here, the run goes on"
        )
        self.enabled, self._writer = False, None  # not closed: closing flushes into the same full disk

    def add_scalars(self, values, step):
        """values: {'loss': .., 'val_loss': ..} -> tags loss/train, loss/val, ..."""
        for key, value in values.items():
            if key == EPOCH:
                continue
            tag = f"{train_key(key)}/val" if is_val_key(key) else (LR if key == LR else f"{key}/train")
            self._write("add_scalar", tag, value, step)

    def add_hparams(self, config, metrics):
        """TensorBoard's HPARAMS tab: the config's keys (flattened: optimizer.args.lr, ...) against the
        final metrics, so that runs compare side by side."""
        if not self.enabled:
            return
        hparams = {
            key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in _flat(config)
        }
        self._write("add_hparams", hparams, {f"hparam/{k}": v for k, v in metrics.items()}, run_name=".")

    def add_image(self, tag, image_hwc, step):
        self._write("add_image", tag, image_hwc, step, dataformats="HWC")

    def close(self):
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError as e:
                self._give_up(e)


def _quiet_writer_threads():
    """TensorBoard's writer thread re-raises a failed write, which Python prints as a thread traceback;
    the same error comes back to the next write in the main thread (TensorboardWriter._give_up), so
    the thread's own is not printed."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook
    if getattr(previous, "quiet_writer_threads", False):
        return

    def hook(args):
        if not (isinstance(args.thread, _AsyncWriterThread) and issubclass(args.exc_type, OSError)):
            previous(args)

    hook.quiet_writer_threads = True
    threading.excepthook = hook


def _flat(tree, prefix=""):
    """[(dotted key, leaf)] of a nested dict."""
    if not isinstance(tree, dict):
        return [(prefix, tree)]
    return [item for key, value in tree.items() for item in _flat(value, f"{prefix}.{key}" if prefix else key)]
