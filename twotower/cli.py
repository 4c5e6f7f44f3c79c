"""The `twotower` command: one subcommand per recipe, benchmark-free.

Each subcommand lives in its own module that defines ``build_parser()`` (an
argparse.ArgumentParser whose --help explains every flag) and ``main(argv=None)``; this
file only dispatches, so `twotower word2vec --help` is the recipe's own help.

Errors and log noise follow the one policy of twotower/command.py: bad input is one
line on stderr and exit status 2 (``TWOTOWER_DEBUG=1``: the traceback). Bare
``twotower`` prints the usage on stderr and exits 2, as argparse does for a missing
command.
"""

import importlib
import sys

from twotower.command import INPUT_ERRORS, one_line, quiet_tensorflow, run_command  # noqa: F401

# subcommand -> (module, one-line summary)
COMMANDS = {
    "demo": ("twotower.recipes.demo", "MovieLens 100K end to end: train, index, serve-ready folder, report"),
    "word2vec": ("twotower.recipes.word2vec", "word2vec (skip-gram/CBOW; NEG, HS, NCE, sampled softmax)"),
    "item2vec": ("twotower.recipes.item2vec", "item2vec on item sequences: MovieLens, your sessions CSV or your log"),
    "dssm": ("twotower.recipes.dssm", "DSSM: feature towers, cosine, in-batch softmax with temperature"),
    "youtube": ("twotower.recipes.youtube", "YouTube 2019: history tower, in-batch softmax with streaming logQ"),
    "mns": ("twotower.recipes.mns", "Mixed negative sampling (in-batch + uniform index negatives)"),
    "ebr": ("twotower.recipes.ebr", "Facebook EBR: triplet loss with hard/semi-hard mining"),
    "airbnb": ("twotower.recipes.airbnb", "Airbnb KDD 2018 listing embeddings: booking as global context, same-market negatives"),
    "eges": ("twotower.recipes.eges", "Alibaba EGES: walks on the item graph, side-information attention, cold start"),
    "serve": ("twotower.recipes.serve", "Serve a saved index folder over HTTP (JSON)"),
    "convert": ("twotower.recipes.convert", "CSV interaction log -> a folder of Parquet shards"),
}


def _usage():
    lines = ["usage: twotower COMMAND [options]   (twotower COMMAND --help for its flags)", "",
             "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


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
    return run_command(name, module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
