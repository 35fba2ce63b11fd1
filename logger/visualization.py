class TensorboardWriter:
    """A SummaryWriter in the run folder, or a no-op when disabled."""

    def __init__(self, log_dir, enabled=True):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))

    def add_scalars(self, values, step):
        """values: {'loss': .., 'val_loss': ..} -> tags loss/train, loss/val, ..."""
        if self.writer is None:
            return
        for key, value in values.items():
            if key == "epoch":
                continue
            tag = f"{key[4:]}/val" if key.startswith("val_") else ("lr" if key == "lr" else f"{key}/train")
            self.writer.add_scalar(tag, value, step)

    def add_image(self, tag, image_hwc, step):
        if self.writer is not None:
            self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def close(self):
        if self.writer is not None:
            self.writer.close()
