"""Imported first by every script: a Ctrl-C (or SIGTERM) while torch and the project's modules load
prints one line instead of a traceback. Once a script runs, utils.cli.run_main says what an
interrupt stopped."""

import sys


def quiet_interrupt(kind, value, traceback):
    """sys.excepthook: an interrupt that reaches the top level (only possible before run_main) is one line."""
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted while starting: nothing was done", file=sys.stderr)
        return
    sys.__excepthook__(kind, value, traceback)


sys.excepthook = quiet_interrupt
