"""The session flags of item2vec, airbnb and eges (recipes/session_flags.py)."""

import argparse

import pytest

from twotower.recipes.session_flags import (add_session_arguments, check_session_arguments,
                                            sessions_from_args)

LOG = """user_id,item_id,timestamp
u2,007,100
u1,b,20
u1,a,10
u1,c,5000
u2,b,150
"""


def _args(argv, gap=None):
    p = argparse.ArgumentParser()
    add_session_arguments(p.add_argument_group("data"), session_gap=gap)
    return p.parse_args(argv)


def test_session_flags_are_checked_before_any_work(tmp_path):
    assert check_session_arguments(_args([]), session_gap=1800) == 1800
    assert check_session_arguments(_args(["--interactions", "x", "--session-gap", "none"]),
                                   session_gap=1800) is None
    assert check_session_arguments(_args(["--interactions", "x", "--session-gap", "60"])) == 60
    for argv, message in (
            (["--sessions", "a.csv", "--interactions", "b.csv"], "--sessions 'a.csv' and "
                                                                  "--interactions 'b.csv'"),
            (["--source", "auto", "--sessions", "a.csv"], "give one source of sessions"),
            (["--interactions", "x", "--session-gap", "-5"],
             "--session-gap must be a number of seconds > 0 or 'none', got '-5'"),
            (["--sessions", "a.csv", "--session-gap", "60"], "--session-gap '60' applies to "
                                                             "an --interactions log only"),
            (["--user-col", "uid"], "--user-col 'uid' applies to an --interactions log")):
        with pytest.raises(ValueError, match=message):
            check_session_arguments(_args(argv))
    with pytest.raises(FileNotFoundError, match="--interactions '.*nope.csv': no such file"):
        sessions_from_args(_args(["--interactions", str(tmp_path / "nope.csv")]))
    with pytest.raises(FileNotFoundError, match="--sessions '.*': a folder, not a file"):
        sessions_from_args(_args(["--sessions", str(tmp_path)]))
    assert sessions_from_args(_args([])) == (None, None)            # MovieLens
    log_path = tmp_path / "log.csv"
    log_path.write_text(LOG.replace("user_id", "customer").replace("timestamp", "when"))
    log, origin = sessions_from_args(_args(["--interactions", str(log_path), "--user-col",
                                            "customer", "--time-col", "when"], gap=None))
    assert origin == f"interactions:{log_path}" and log.num_sessions == 2
