"""The `twotower` command: one subcommand per recipe, benchmark-free.

Each subcommand lives in its own module that defines ``build_parser()`` (an
argparse.ArgumentParser whose --help explains every flag) and ``main(argv=None)``; this
file only dispatches, so `twotower word2vec --help` is the recipe's own help.

Bad input — a ValueError (OutputPathError and UnknownIdError are ValueErrors), a missing,
existing, unreadable or undecodable file, a corrupt zip — ends the command with one line
on stderr, ``twotower <command>: error: <message>``, and exit status 2, as argparse does
for a bad flag. ``TWOTOWER_DEBUG=1`` re-raises instead, for the traceback. Bare
``twotower`` prints the usage on stderr and exits 2, as argparse does for a missing
command.

TensorFlow's C++ log (on a machine without a GPU, the ``cuInit`` error; XLA's "compiled
cluster" line) and absl's Python log lines are off unless ``TWOTOWER_DEBUG=1`` or the
user set ``TF_CPP_MIN_LOG_LEVEL`` themselves.
"""

import importlib
import os
import sys
import zipfile

# the errors that mean "the input is wrong", not "twotower is broken"
INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError,
                IsADirectoryError, NotADirectoryError, UnicodeDecodeError,
                zipfile.BadZipFile)

# subcommand -> (module, one-line summary)
COMMANDS = {
    "demo": ("twotower.recipes.demo", "MovieLens 100K end to end: train, index, serve-ready folder, report"),
    "word2vec": ("twotower.recipes.word2vec", "word2vec (skip-gram/CBOW; NEG, HS, NCE, sampled softmax)"),
    "item2vec": ("twotower.recipes.item2vec", "item2vec on MovieLens sessions"),
    "dssm": ("twotower.recipes.dssm", "DSSM: feature towers, cosine, in-batch softmax with temperature"),
    "youtube": ("twotower.recipes.youtube", "YouTube 2019: history tower, in-batch softmax with streaming logQ"),
    "mns": ("twotower.recipes.mns", "Mixed negative sampling (in-batch + uniform index negatives)"),
    "ebr": ("twotower.recipes.ebr", "Facebook EBR: triplet loss with hard/semi-hard mining"),
    "airbnb": ("twotower.recipes.airbnb", "Airbnb KDD 2018 listing embeddings: booking as global context, same-market negatives"),
    "eges": ("twotower.recipes.eges", "Alibaba EGES: walks on the item graph, side-information attention, cold start"),
    "serve": ("twotower.index.server", "Serve a saved index folder over HTTP (JSON)"),
    "convert": ("twotower.data.interactions", "CSV interaction log -> a folder of Parquet shards"),
}


def _usage():
    lines = ["usage: twotower COMMAND [options]   (twotower COMMAND --help for its flags)", "",
             "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def _debug():
    return os.environ.get("TWOTOWER_DEBUG", "") not in ("", "0")


def quiet_tensorflow(native=False):
    """Silences absl's and TensorFlow's Python warnings for this process, unless
    ``TWOTOWER_DEBUG`` is set (TensorFlow's C++ log is set by ``import twotower``, before
    TensorFlow is imported: twotower/_keras2.py). ``native``: also drop absl's C++
    INFO/WARNING lines from file descriptor 2 (twotower/_quiet.py) — for a real command
    line only, not for a caller that runs :func:`main` inside its own process."""
    if _debug():
        return
    import logging

    if native:
        from twotower._quiet import filter_native_stderr

        filter_native_stderr()

    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def main(argv=None):
    command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"twotower: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    quiet_tensorflow(native=command_line)
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as e:
        if e.name == COMMANDS[name][0]:
            print(f"twotower: command {name!r} is not available in this build", file=sys.stderr)
            return 2
        raise
    try:
        result = module.main(rest)
    except INPUT_ERRORS as e:
        if _debug():
            raise
        print(f"twotower {name}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0 if result is None else int(result)


def _one_line(error):
    """The error's message on one line (OSError: "<strerror>: <file>")."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.strerror}: {error.filename!r}"
    elif isinstance(error, UnicodeDecodeError):
        text = (f"cannot decode byte {error.object[error.start:error.start + 1]!r} at offset "
                f"{error.start} as {error.encoding} ({error.reason})")
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
