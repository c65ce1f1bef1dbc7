"""Errors the user can fix, shown as one line: :class:`InputError` and the scripts' entry
point :func:`run_cli`, which turns it (and a stop, and a second Ctrl-C) into one line and
an exit status instead of a traceback."""
from __future__ import annotations

import re
import sys
from typing import Callable, Sequence

from signals import StopRequested


class InputError(ValueError):
    """Bad user input (a path, a file, a flag) with a message that names it and the fix.

    Scripts catch it at the top level and print the message as one line, without a
    traceback: the user needs the fix, not our stack.
    """


# ``module.ClassName: `` at the start of a traceback's last line (``errors.InputError: ``)
_EXCEPTION_PREFIX = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*Error: ")


def input_error_line(err: BaseException) -> str:
    """The one line to show for an :class:`InputError`. One raised in a DataLoader worker
    process reaches the main process re-raised by PyTorch with the worker's whole traceback
    in its message; the original message is its last line, after the exception's name."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1].strip()
        return _EXCEPTION_PREFIX.sub("", last, count=1)
    return text


def run_cli(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    """Run ``main(argv)``; turn an :class:`InputError` (also one from a DataLoader worker) into a
    one-line error and exit 2, a :class:`signals.StopRequested` into its one line and exit 128 + signal,
    and a ``KeyboardInterrupt`` (a second Ctrl-C, or one before any handler) into one line and exit 130."""
    try:
        main(argv)
    except InputError as err:
        print(f"error: {input_error_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except StopRequested as stop:
        print(str(stop), file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    except KeyboardInterrupt:
        print("interrupted (SIGINT): stopped at once; a file being written keeps its previous version; run the "
              "same command again", file=sys.stderr)
        raise SystemExit(130) from None
