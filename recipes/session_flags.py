"""The flags by which item2vec, airbnb and eges take a user's own sessions, declared once:
--sessions, --interactions, --user-col, --item-col, --time-col, --session-gap, and the
SessionLog they name (data/sessions.py reads it)."""

import os

import numpy as np

from twotower.data.interactions import ColumnNames
from twotower.data.sessions import read_interaction_sessions, read_session_csv


def add_session_arguments(group, *, session_gap, movielens="MovieLens"):
    """The flags by which item2vec, airbnb and eges take a user's own sessions, added to
    the argparse ``group`` (the same names in all three): --source (MovieLens, called
    ``movielens`` in the help), --sessions, --interactions,
    --user-col, --item-col, --time-col, --session-gap. ``session_gap``: the recipe's
    default gap in seconds (None: one session per user), for the help text; the recipe
    passes it again to ``sessions_from_args``."""
    group.add_argument("--source", default=None,
                       help=f"{movielens}, when neither --sessions nor --interactions is "
                            "given: a folder/zip, 'url', 'recbole' (offline wheel) or 'auto' "
                            "(default auto)")
    gap = "none (a user's whole history is one session)" if session_gap is None else \
        f"{session_gap:g} s"
    group.add_argument("--sessions", default=None, metavar="FILE",
                       help="your own sessions: a CSV with header session_id,item_id,"
                            "timestamp (one event per line; timestamp an integer that "
                            "orders a session's events; optional columns booked 0/1 and "
                            "market, read by airbnb). Default: MovieLens (--source)")
    group.add_argument("--interactions", default=None, metavar="PATH",
                       help="your own interaction log instead: user_id,item_id,timestamp "
                            "as a CSV with a header (string or integer ids; Unix seconds or "
                            "ISO-8601 times), a Parquet file or a folder of Parquet shards, "
                            "as the two-tower recipes take it; each user's interactions in "
                            "time order are one sequence, split at --session-gap (airbnb "
                            "also reads optional booked and market columns)")
    group.add_argument("--user-col", default=None,
                       help="--interactions: the user column (default user_id; userId, "
                            "customer_id, ... are also accepted)")
    group.add_argument("--item-col", default=None,
                       help="--interactions: the item column (default item_id; movieId, "
                            "itemId, product_id, ... are also accepted)")
    group.add_argument("--time-col", default=None,
                       help="--interactions: the timestamp column (default timestamp)")
    group.add_argument("--session-gap", default=None, metavar="SECONDS",
                       help="--interactions: start a new session where more than this many "
                            "seconds pass between a user's interactions (Airbnb 2018: "
                            f"1800), or 'none' (default: {gap})")
    return group


def parse_session_gap(value, default=None):
    """--session-gap: None (not given) → ``default``; 'none' → None; else seconds > 0."""
    if value is None:
        return default
    if isinstance(value, str) and value.strip().lower() in ("none", "off"):
        return None
    try:
        gap = float(value)
    except (TypeError, ValueError):
        gap = float("nan")
    if not gap > 0 or not np.isfinite(gap):
        raise ValueError(f"--session-gap must be a number of seconds > 0 or 'none', got "
                         f"{value!r}")
    return gap


def check_session_arguments(args, *, session_gap=None):
    """ValueErrors for the flags of ``add_session_arguments`` (and --source), before any
    work; returns the session gap in seconds (or None). ``args.source`` is None when not
    given."""
    given = [(flag, v) for flag, v in (("--source", getattr(args, "source", None)),
                                       ("--sessions", args.sessions),
                                       ("--interactions", args.interactions)) if v is not None]
    if len(given) > 1:
        (f1, v1), (f2, v2) = given[:2]
        raise ValueError(f"{f1} {v1!r} and {f2} {v2!r}: give one source of sessions "
                         f"(MovieLens --source, a --sessions CSV or an --interactions log)")
    if args.interactions is None:
        for flag in ("--user-col", "--item-col", "--time-col", "--session-gap"):
            value = getattr(args, flag[2:].replace("-", "_"))
            if value is not None:
                why = (" (a --sessions CSV names session_id,item_id,timestamp)"
                       if args.sessions else
                       " (MovieLens sessions are cut with --max-gap-hours)"
                       if flag == "--session-gap" and hasattr(args, "max_gap_hours") else "")
                raise ValueError(f"{flag} {value!r} applies to an --interactions log only"
                                 f"{why}")
    return parse_session_gap(args.session_gap, session_gap)


def log_columns(args):
    """interactions.ColumnNames of --user-col / --item-col / --time-col."""
    return ColumnNames(args.user_col or "user_id", args.item_col or "item_id",
                       args.time_col or "timestamp")


def sessions_from_args(args, *, session_gap=None, booked_col=None, market_col=None):
    """The SessionLog of --sessions or --interactions (None when neither: MovieLens), and
    its origin ("sessions:PATH" / "interactions:PATH"). ``session_gap``: the recipe's
    default; ``booked_col`` / ``market_col``: read those optional columns (airbnb)."""
    gap = check_session_arguments(args, session_gap=session_gap)
    if args.sessions is not None:
        path = args.sessions
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--sessions {path!r}: "
                                    f"{'a folder, not a' if os.path.isdir(path) else 'no such'}"
                                    f" file (give the sessions CSV)")
        return (read_session_csv(path, booked_col=booked_col, market_col=market_col),
                f"sessions:{path}")
    if args.interactions is not None:
        if not os.path.exists(args.interactions):
            raise FileNotFoundError(f"--interactions {args.interactions!r}: no such file or "
                                    f"folder (give the log: a CSV, a Parquet file or a "
                                    f"folder of Parquet shards)")
        return (read_interaction_sessions(args.interactions, log_columns(args),
                                          session_gap=gap, booked_col=booked_col,
                                          market_col=market_col),
                f"interactions:{args.interactions}")
    return None, None
