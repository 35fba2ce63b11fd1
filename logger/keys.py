"""The keys of the epoch log (the dict printed one key per line each epoch, saved in the checkpoints'
history, drawn and written to TensorBoard): which the trainer writes itself, and how a validation
key is named. Metrics, config checks, the trainer, the plots and the tuner all read it from here."""

EPOCH, LOSS, LR = "epoch", "loss", "lr"
EPOCH_TIME = "epoch_time"  # wall seconds of the epoch, training and validation
IMAGE_SIZE, MIX_P = "image_size", "mix_p"  # logged by the batch tricks (progressive resizing, mixing)
VALID_PREFIX = "val_"

# keys the trainer writes itself, so a metric may not be named after one of them
TRAINER_KEYS = (EPOCH, LOSS, LR, IMAGE_SIZE, MIX_P, EPOCH_TIME)
TIMING_KEYS = (EPOCH_TIME,)  # differ between two runs of the same recipe: not part of what a run computes


def training_seconds(history):
    """(total wall seconds, epochs) of the epochs of `history` that recorded their time."""
    timed = [h[EPOCH_TIME] for h in history if EPOCH_TIME in h]
    return sum(timed), len(timed)


def describe_duration(seconds, epochs):
    """ "12.3 s over 1 epoch", "4.2 min over 30 epochs": seconds under a minute, the epoch count's number."""
    took = f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"
    return f"{took} over {epochs} epoch{'s' if epochs != 1 else ''}"


def val_key(key):
    """The key of `key` measured on the validation split: loss -> val_loss."""
    return VALID_PREFIX + key


def is_val_key(key):
    return key.startswith(VALID_PREFIX)


def train_key(key):
    """val_loss -> loss; a training key unchanged."""
    return key[len(VALID_PREFIX) :] if is_val_key(key) else key


def tta(key, kind):
    """The key of a test-time-augmented figure: (accuracy, "flip") -> accuracy_flip_tta."""
    return f"{key}_{kind}_tta"


def reserved_reason(name):
    """Why a metric may not be logged as `name`, or None when it may."""
    if name in TRAINER_KEYS:
        return f"the trainer logs {name!r} itself"
    if is_val_key(name):
        return f"names starting with {VALID_PREFIX!r} are the validation figures of the metrics"
    return None
