import numpy as np
import pytest

from twotower.data.movielens import MovieLens
from twotower.data.sessions import (booking_warnings, movielens_booking_sessions,
                                    read_interaction_sessions, read_session_csv,
                                    split_booked_sessions, split_sessions)

CSV = """session_id,item_id,timestamp,booked,market
s2,b,50,0,rome
s1,a,20,0,paris
s1,c,10,0,paris
s1,a,30,1,paris
s2,d,60,1,rome
s3,e,70,0,rome
"""


def test_read_documented_csv(tmp_path):
    path = tmp_path / "sessions.csv"
    path.write_text(CSV)
    log = read_session_csv(path)
    names = np.array(log.item_names)
    assert [names[s].tolist() for s in log.sequences()] == [["c", "a", "a"], ["b", "d"], ["e"]]
    assert [names[s].tolist() for s in log.sequences(min_length=2)] == [["c", "a", "a"], ["b", "d"]]
    booked = log.booked_items()
    assert names[booked[0]] == "a" and names[booked[1]] == "d" and booked[2] == -1
    assert [log.market_names[m] for m in log.item_market] == ["paris", "rome", "paris", "rome", "rome"]


def test_bad_lines_name_the_file_and_line(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("session,item_id,timestamp,booked\ns,a,1,0\n")
    with pytest.raises(ValueError, match=r"missing \['session_id'\]"):
        read_session_csv(path)
    path.write_text("user_id,item_id,timestamp\nu,a,1\n")          # a log, not sessions
    with pytest.raises(ValueError, match="goes to --interactions"):
        read_session_csv(path)
    path.write_text("session_id,item_id,timestamp,booked,market\ns,a,1,0,m\ns,b,noon,0,m\n")
    with pytest.raises(ValueError, match="line 3: timestamp must be an integer, got 'noon'"):
        read_session_csv(path)
    path.write_text("session_id,item_id,timestamp,booked,market\ns,a,1,maybe,m\n")
    with pytest.raises(ValueError, match="line 2: booked must be 0 or 1 .*got 'maybe'"):
        read_session_csv(path)


def test_booked_and_market_are_optional(tmp_path):
    """item2vec and eges need session_id,item_id,timestamp only; booked may be written
    as pandas writes a bool column (True/False)."""
    path = tmp_path / "s.csv"
    path.write_text("session_id,item_id,timestamp\ns1,a,1\ns1,b,2\ns2,b,3\n")
    log = read_session_csv(path)
    assert not log.has_booked and not log.has_markets and not log.booked.any()
    assert log.num_sessions == 2 and log.item_names == ["a", "b"]
    path.write_text("session_id,item_id,timestamp,booked,market\ns1,a,1,False,m\n"
                    "s1,b,2,True,m\n")
    log = read_session_csv(path)
    assert log.has_booked and log.booked.tolist() == [False, True]
    ignored = read_session_csv(path, booked_col=None, market_col=None)
    assert not ignored.has_booked and not ignored.booked.any() and not ignored.has_markets


def _log(rows):
    """A SessionLog from (session, item, booked) rows in time order."""
    from twotower.data.sessions import SessionLog

    s = np.array([r[0] for r in rows])
    items = sorted({r[1] for r in rows})
    return SessionLog(s, np.array([items.index(r[1]) for r in rows]), np.arange(len(rows)),
                      np.array([r[2] for r in rows], bool), np.zeros(len(rows), np.int64),
                      items, ["m"])


def _names(log, ids):
    return [log.item_names[i] for i in ids]


def test_a_booking_that_ends_its_session_stays_in_training():
    """The natural layout — a session's last event is its booking — keeps the booking
    (the session's global context): the held-out event is the click before it, of
    another item than the booked one (issue: 610 booked sessions read as 0)."""
    rows = ([(0, x, x == "d") for x in "abcd"]                 # booked last
            + [(1, x, k == 3) for k, x in enumerate("abdd")]    # last click = booked item
            + [(2, x, x == "d") for x in "ad"]                  # 2 events: nothing held
            + [(3, x, False) for x in "abc"]                    # not booked
            + [(4, x, x == "b") for x in "abcd"]                # booked in the middle
            + [(5, x, k == 2) for k, x in enumerate("ddd")])    # only the booked item
    log = _log(rows)
    train, booked, held, dropped = split_booked_sessions(log)
    assert dropped == 0
    assert [_names(log, t) for t in train] == [list("abd"), list("add"), list("ad"),
                                               list("ab"), list("abc"), list("ddd")]
    assert [log.item_names[b] if b >= 0 else None for b in booked] == \
        ["d", "d", "d", None, "b", "d"]
    assert [(log.item_names[q], log.item_names[t], sorted(_names(log, seen)))
            for q, t, seen in held] == [("b", "c", ["a", "b"]), ("a", "b", ["a"]),
                                        ("b", "c", ["a", "b"]), ("c", "d", ["a", "b", "c"])]
    # every booked session keeps its booking: none is lost to evaluation
    many = _log([(s, x, x == "z") for s in range(50) for x in "abcz"])
    assert (split_booked_sessions(many)[1] >= 0).sum() == many.num_booked_sessions == 50


def test_booking_warnings_name_the_column(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("session_id,item_id,timestamp,is_booking,market\ns,a,1,0,m\ns,b,2,1,m\n")
    (message,) = booking_warnings(read_session_csv(path))
    assert "no 'booked' column" in message and "--booked-col is_booking" in message
    path.write_text("session_id,item_id,timestamp,booked,market\ns,a,1,0,m\ns,b,2,0,m\n")
    (message,) = booking_warnings(read_session_csv(path))
    assert "'booked' marks no booking" in message and str(path) in message
    path.write_text("session_id,item_id,timestamp,booked\ns,a,1,0\ns,b,2,1\n")
    assert booking_warnings(read_session_csv(path)) == []
    path.write_text("session_id,item_id,timestamp\ns,a,1\ns,b,2\n")
    assert booking_warnings(read_session_csv(path)) == []


LOG = """user_id,item_id,timestamp
u2,007,100
u1,b,20
u1,a,10
u1,c,5000
u2,b,150
"""


def test_an_interaction_log_is_each_users_sequence_split_at_the_gap(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(LOG)
    log = read_interaction_sessions(path)
    assert log.item_names == ["007", "a", "b", "c"]             # the log's own ids, as text
    assert [_names(log, s) for s in log.sequences()] == [["a", "b", "c"], ["007", "b"]]
    split = read_interaction_sessions(path, session_gap=1800)
    assert [_names(split, s) for s in split.sequences()] == [["a", "b"], ["c"], ["007", "b"]]
    assert not split.has_booked and not split.has_markets
    # Parquet reads the same, and optional booked / market columns are read when asked
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    table = pa.table({"user_id": ["u1", "u1", "u1"], "item_id": ["x", "y", "z"],
                      "timestamp": [1, 2, 3], "booked": ["0", "0", "1"],
                      "market": ["p", "p", "q"]})
    pq.write_table(table, tmp_path / "log.parquet")
    log = read_interaction_sessions(tmp_path / "log.parquet", booked_col="booked",
                                    market_col="market")
    assert log.booked.tolist() == [False, False, True] and log.market_names == ["p", "q"]
    assert read_interaction_sessions(tmp_path / "log.parquet").has_booked is False
    with pytest.raises(ValueError, match="session_gap must be None or > 0"):
        read_interaction_sessions(path, session_gap=0)


def test_split_at_gaps():
    user = np.array([1, 1, 1, 2, 2])
    ts = np.array([0, 100, 5000, 10, 20])
    np.testing.assert_array_equal(split_sessions(user, ts, max_gap=3600), [0, 0, 1, 2, 2])
    np.testing.assert_array_equal(split_sessions(user, ts), [0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match="max_gap must be None or > 0 seconds, got 0"):
        split_sessions(user, ts, max_gap=0)


def test_movielens_adaptation_books_the_last_five_star_and_uses_first_genre():
    hour = 3600
    ml = MovieLens(
        ratings={"user_id": np.array([1, 1, 1, 1]), "movie_id": np.array([10, 20, 30, 10]),
                 "rating": np.array([5.0, 5.0, 3.0, 4.0]),
                 "timestamp": np.array([0, 60, 120, 10 * hour])},
        users=None,
        movies={"movie_id": np.array([10, 20, 30]), "title": np.array(["A", "B", "C"]),
                "year": np.array([1995, 1996, 0]),
                "genres": [("Drama", "War"), ("Comedy",), ()]})
    log = movielens_booking_sessions(ml, max_gap_hours=1.0)
    assert [s.tolist() for s in log.sequences()] == [[0, 1, 2], [0]]
    assert log.booked_items().tolist() == [1, -1]  # B is the last 5-star of session 1
    assert [log.market_names[m] for m in log.item_market] == ["Drama", "Comedy", "(none)"]
    assert log.item_names == ["A (1995)", "B (1996)", "C"]


def test_non_utf8_names_the_file_and_line_and_a_bom_is_read(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(CSV.encode().replace(b"s3,e", b"s3,\xe9"))     # Latin-1 'é', line 7
    with pytest.raises(ValueError, match=r"s\.csv, line 7: not UTF-8 \(byte 4 of the line "
                                         r"is b'\\xe9'\)"):
        read_session_csv(path)
    path.write_bytes(b"\xef\xbb\xbf" + CSV.encode())                # Excel's UTF-8 BOM
    assert read_session_csv(path).num_sessions == 3
