"""User-facing errors: each one is printed as a single line, without a traceback (print_error)."""

import sys


class UserError(Exception):
    """A mistake in the input (config, data, checkpoint) that the program can name."""


class ConfigError(UserError):
    """A config key is unknown, missing or of the wrong type."""


class DataError(UserError):
    """A data file or folder is missing, unreadable or laid out wrongly."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or does not fit the model."""


class SpecError(UserError):
    """The network breaks one or more rules of the `constraints` section."""


class DistributedError(UserError):
    """Under torchrun: another process of the group died or stopped answering."""


class TrainingError(UserError):
    """Training cannot go on as configured (e.g. the loss became NaN or infinite)."""


class DivergedError(TrainingError):
    """The loss became NaN or infinite. Under torchrun every rank raises it at the same batch (the
    check is all-reduced), so rank 0 alone reports it."""


class ReportError(UserError):
    """A report or picture could not be written (a full disk, a folder without write permission)."""


class ArgumentError(ValueError):
    """A class of the project refuses the value of its argument `arg` (None: a combination of them).
    Not a UserError: the class does not know where the value came from. The config layer
    (`config.parser.args_named`, around every object a config builds) names the key:
    `<section>.args.<arg>: <message>`; called from Python, it is a ValueError like any other."""

    def __init__(self, arg, message):
        super().__init__(f"{arg}: {message}" if arg else message)
        self.arg, self.message = arg, message


class NonFiniteLoss(ArithmeticError):
    """The training loss became NaN or infinite in batches `first`..`last` (1-based) of an epoch;
    `value` is the loss of batch `last` here. The trainer turns it into a TrainingError that says
    which checkpoint is kept."""

    def __init__(self, first, last, value):
        self.first, self.last, self.value = first, last, value
        self.where = f"batch {last}" if first == last else f"batches {first}-{last}"
        super().__init__(f"{self.where}: the loss is {value}")


def print_error(e):
    """`error: <message>` on stderr, on one line: a line break inside it (a file name can hold one)
    is shown as \\n. A SpecError keeps its further lines, one per broken rule."""
    text = str(e) or type(e).__name__
    if isinstance(e, SpecError):
        lines = text.splitlines()
        print(f"error: {lines[0]}", *lines[1:], sep="\n", file=sys.stderr, flush=True)
        return
    from utils.safe_text import for_console

    print(f"error: {for_console(text)}", file=sys.stderr, flush=True)
