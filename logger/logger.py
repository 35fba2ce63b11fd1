import logging
import logging.handlers
import sys

LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


def setup_logging(run_dir=None, verbosity=2):
    """Console (stdout, bare messages, in the epoch-log format) and, with a run folder, info.log.
    verbosity: 0, 1 or 2 (LEVELS; trainer.verbosity, checked by the config schema)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(console)
    if run_dir is not None:
        root.addHandler(_file_handler(run_dir))
    else:  # keep the records until the run folder exists (attach_run_log), so info.log misses nothing
        root.addHandler(logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1))
    root.setLevel(LEVELS[verbosity])
    for noisy in ("PIL", "matplotlib", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class RunLogHandler(logging.FileHandler):
    """info.log. A record it cannot write (a full disk) is one warning line on stderr, once, and the
    file is closed for the rest of the run: the console keeps everything, and no logging traceback
    (Python's default, one per record) buries the error that follows."""

    def handleError(self, record):
        if self.stream is None:
            return
        error = sys.exc_info()[1]
        sys.stderr.write(
            f"warning: {self.baseFilename}: cannot write the log ({getattr(error, 'strerror', None) or error}); "
            "it stops here, the console goes on\n"
        )
        stream, self.stream = self.stream, None
        self.emit = lambda record: None
        try:
            stream.close()  # flushes what it holds: the disk is still full
        except OSError:
            pass


def _file_handler(run_dir):
    file = RunLogHandler(run_dir / "info.log")
    file.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    return file


def attach_run_log(run_dir):
    """Start info.log in the (now existing) run folder, with every record logged since setup_logging."""
    root = logging.getLogger()
    file = _file_handler(run_dir)
    for handler in list(root.handlers):
        if isinstance(handler, logging.handlers.MemoryHandler):
            handler.setTarget(file)
            handler.flush()
            root.removeHandler(handler)
            handler.close()
    root.addHandler(file)


def get_logger(name):
    return logging.getLogger(name)
