import logging
import sys

LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


def setup_logging(run_dir=None, verbosity=2):
    """Console (stdout, bare messages, as in the user's logs) and, with a run folder, info.log."""
    if verbosity not in LEVELS:
        from utils.errors import ConfigError

        raise ConfigError(f"trainer.verbosity: expected 0, 1 or 2, got {verbosity}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(console)
    if run_dir is not None:
        file = logging.FileHandler(run_dir / "info.log")
        file.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        root.addHandler(file)
    root.setLevel(LEVELS[verbosity])
    for noisy in ("PIL", "matplotlib", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name):
    return logging.getLogger(name)
