import numpy as np
import pytest

from twotower.data.movielens import MovieLens
from twotower.data.sessions import (movielens_booking_sessions, read_session_csv,
                                    split_sessions)

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
    path.write_text("session_id,item_id,timestamp,booked\ns,a,1,0\n")
    with pytest.raises(ValueError, match=r"missing \['market'\]"):
        read_session_csv(path)
    path.write_text("session_id,item_id,timestamp,booked,market\ns,a,1,0,m\ns,b,noon,0,m\n")
    with pytest.raises(ValueError, match="line 3: timestamp must be an integer, got 'noon'"):
        read_session_csv(path)
    path.write_text("session_id,item_id,timestamp,booked,market\ns,a,1,yes,m\n")
    with pytest.raises(ValueError, match="line 2: booked must be 0 or 1, got 'yes'"):
        read_session_csv(path)


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
