import contextlib
import errno
import signal
import sys
import threading

from utils.errors import UserError, print_error


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a job scheduler's stop), handled as Ctrl-C is, with exit status 143."""


def _terminate(signum, frame):
    raise Terminated()


# what a full disk, a quota, a read-only or forbidden folder raise while a result is written: the
# user's machine, not the program (every output goes through utils.paths.atomic_write, so an older
# file stays whole and no temp file is left)
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def ignore_further_interrupts():
    """After a first Ctrl-C or SIGTERM, while the program says what it saved and exits: a second one
    is ignored instead of cutting that short with a traceback (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def exit_status(interrupt):
    return 143 if isinstance(interrupt, Terminated) else 130


def run_main(main, *args, interrupted=None, single_process=None):
    """Call main(*args); a UserError becomes `error: ...` on stderr (one line, plus one line per
    failed rule for spec errors) and exit status 2, never a traceback; Ctrl-C and SIGTERM print
    `interrupted` (exit 130 / 143). single_process: the script's name, for scripts that refuse
    to run under torchrun."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        if single_process:
            from utils.distributed import require_single_process

            require_single_process(single_process)
        main(*args)
    except UserError as e:
        print_error(e)
        return 2
    except OSError as e:
        if e.errno not in OUTPUT_ERRNOS:  # anything else is a bug or a broken machine: its traceback
            raise
        where = e.filename or "an output file"
        print_error(UserError(f"{where}: cannot write ({e.strerror}); files written before are left as they were"))
        return 2
    except KeyboardInterrupt as e:
        ignore_further_interrupts()
        print(interrupted or "interrupted", file=sys.stderr)
        return exit_status(e)
    finally:
        if in_main_thread:
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:  # ignored: the process is on its way out
                signal.signal(signal.SIGTERM, previous)
    return 0


@contextlib.contextmanager
def on_interrupt_say(say, hint, enabled=True):
    """Ctrl-C or SIGTERM inside the block: `say("interrupted: <hint()>")` (or "stopped (SIGTERM): ...")
    and exit with 130 / 143, a second interrupt ignored so that the line is never cut short. Not
    enabled: the KeyboardInterrupt goes on to the caller."""
    try:
        yield
    except KeyboardInterrupt as e:
        if not enabled:
            raise
        ignore_further_interrupts()
        say(f"{'stopped (SIGTERM)' if isinstance(e, Terminated) else 'interrupted'}: {hint()}")
        raise SystemExit(exit_status(e)) from None
