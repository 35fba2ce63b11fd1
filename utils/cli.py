import sys

from utils.errors import UserError


def print_error(e):
    """`error: <first line>` and any further lines of a UserError, on stderr."""
    lines = str(e).splitlines() or [type(e).__name__]
    print(f"error: {lines[0]}", *lines[1:], sep="\n", file=sys.stderr, flush=True)


def run_main(main, *args, interrupted=None, single_process=None):
    """Call main(*args); a UserError becomes `error: ...` on stderr (one line, plus one line per
    failed rule for spec errors) and exit status 2, never a traceback. single_process: the
    script's name, for scripts that refuse to run under torchrun."""
    try:
        if single_process:
            from utils.distributed import require_single_process

            require_single_process(single_process)
        main(*args)
    except UserError as e:
        print_error(e)
        return 2
    except KeyboardInterrupt:
        print(interrupted or "interrupted", file=sys.stderr)
        return 130
    return 0
