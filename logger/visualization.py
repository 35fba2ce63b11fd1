from logger.keys import EPOCH, LR, is_val_key, train_key


class TensorboardWriter:
    """A SummaryWriter in the run folder, or a no-op when disabled. It creates its events file at the
    first value written, not before (a run that fails its checks writes nothing). log_dir: a path,
    or a callable giving it then."""

    def __init__(self, log_dir, enabled=True):
        self._log_dir, self.enabled, self._writer = log_dir, enabled, None

    @property
    def writer(self):
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self._log_dir() if callable(self._log_dir) else self._log_dir))
        return self._writer

    def add_scalars(self, values, step):
        """values: {'loss': .., 'val_loss': ..} -> tags loss/train, loss/val, ..."""
        if not self.enabled:
            return
        for key, value in values.items():
            if key == EPOCH:
                continue
            tag = f"{train_key(key)}/val" if is_val_key(key) else (LR if key == LR else f"{key}/train")
            self.writer.add_scalar(tag, value, step)

    def add_hparams(self, config, metrics):
        """TensorBoard's HPARAMS tab: the config's keys (flattened: optimizer.args.lr, ...) against the
        final metrics, so that runs compare side by side."""
        if not self.enabled:
            return
        hparams = {
            key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in _flat(config)
        }
        self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in metrics.items()}, run_name=".")

    def add_image(self, tag, image_hwc, step):
        if self.enabled:
            self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def close(self):
        if self._writer is not None:
            self._writer.close()


def _flat(tree, prefix=""):
    """[(dotted key, leaf)] of a nested dict."""
    if not isinstance(tree, dict):
        return [(prefix, tree)]
    return [item for key, value in tree.items() for item in _flat(value, f"{prefix}.{key}" if prefix else key)]
