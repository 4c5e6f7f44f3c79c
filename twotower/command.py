"""The one error policy of every twotower command, whoever runs it: the ``twotower``
CLI (twotower/cli.py) or a recipe module run as ``python -m twotower.recipes.<name>``.

Bad input — a ValueError (OutputPathError and UnknownIdError are ValueErrors), a missing,
existing, unreadable or undecodable file, a corrupt zip — ends the command with one line
on stderr, ``twotower <command>: error: <message>``, and exit status 2, as argparse does
for a bad flag. ``TWOTOWER_DEBUG=1`` re-raises instead, for the traceback.

TensorFlow's C++ log (on a machine without a GPU, the ``cuInit`` error; XLA's "compiled
cluster" line) and absl's log lines are off unless ``TWOTOWER_DEBUG=1`` or the user set
``TF_CPP_MIN_LOG_LEVEL`` themselves. A dependency-free helper: any layer may use it.
"""

import os
import sys
import zipfile

# the errors that mean "the input is wrong", not "twotower is broken"
INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError,
                IsADirectoryError, NotADirectoryError, UnicodeDecodeError,
                zipfile.BadZipFile)


def debug():
    """Whether ``TWOTOWER_DEBUG`` asks for tracebacks and TensorFlow's log."""
    return os.environ.get("TWOTOWER_DEBUG", "") not in ("", "0")


def quiet_tensorflow(native=False):
    """Silences absl's and TensorFlow's Python warnings for this process, unless
    :func:`debug` (TensorFlow's C++ log is set by ``import twotower``, before TensorFlow
    is imported: twotower/_keras2.py). ``native``: also drop absl's C++ INFO/WARNING
    lines from file descriptor 2 (twotower/_quiet.py) — for a real command line only,
    not for a caller that runs a command inside its own process."""
    if debug():
        return
    import logging

    if native:
        from twotower._quiet import filter_native_stderr

        filter_native_stderr()
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def one_line(error):
    """The error's message on one line (OSError: "<strerror>: <file>").

    >>> one_line(ValueError("first line\\n  second line"))
    'first line second line'
    """
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.strerror}: {error.filename!r}"
    elif isinstance(error, UnicodeDecodeError):
        text = (f"cannot decode byte {error.object[error.start:error.start + 1]!r} at offset "
                f"{error.start} as {error.encoding} ({error.reason})")
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def run_command(name, main, argv):
    """Runs ``main(argv)`` under the error policy; returns the exit status (0 when
    ``main`` returns None)."""
    try:
        result = main(argv)
    except INPUT_ERRORS as e:
        if debug():
            raise
        print(f"twotower {name}: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0 if result is None else int(result)


def run_as_main(name, main):
    """``python -m twotower.recipes.<name> ARGS`` as ``twotower <name> ARGS``: quiet
    TensorFlow, the error policy, the process's own arguments. Returns the exit status."""
    quiet_tensorflow(native=True)
    return run_command(name, main, sys.argv[1:])
