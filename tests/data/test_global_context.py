"""twotower.data.global_context: Airbnb's booked listing as a context of every centre."""

import numpy as np
import pytest

from twotower.data.global_context import GlobalContext
from twotower.data.sessions import split_booked_sessions, read_session_csv
from twotower.data.word2vec_examples import Word2VecExamples


def test_pairs_every_kept_centre_with_its_sentence_context():
    gc = GlobalContext(np.array([7, -1, 2]))
    ids = np.array([1, 7, 3, 4, 5, 2, 6])
    sids = np.array([0, 0, 0, 1, 1, 2, 2])
    q, c = gc(0, None, ids, sids)
    # sentence 0 → 7 (not 7 with itself), sentence 1 none, sentence 2 → 2 (not 2 itself)
    assert q.tolist() == [1, 3, 6] and c.tolist() == [7, 7, 2]
    q, c = GlobalContext(np.array([7, -1, 2]), include_self=True)(0, None, ids, sids)
    assert q.tolist() == [1, 7, 3, 2, 6]


def test_extra_pairs_reach_the_epoch():
    ids = np.array([0, 1, 2, 3, 0, 1], np.int32)
    sids = np.array([0, 0, 0, 1, 1, 1], np.int32)
    base = Word2VecExamples(ids, sids, np.ones(5), window=1, sample=0, seed=3)
    more = Word2VecExamples(ids, sids, np.ones(5), window=1, sample=0, seed=3,
                            extra_pairs=GlobalContext(np.array([4, -1])))
    q0, _ = base.epoch(0)
    q1, i1 = more.epoch(0)
    assert len(q1) == len(q0) + 3 and sorted(q1[i1 == 4].tolist()) == [0, 1, 2]


def test_bad_context():
    with pytest.raises(ValueError, match="-1 for none"):
        GlobalContext(np.array([3, -2]))
    with pytest.raises(ValueError, match="sentence id 5"):
        GlobalContext(np.array([1]))(0, None, np.array([0]), np.array([5]))
    with pytest.raises(ValueError, match="extra_pairs"):
        Word2VecExamples(np.arange(4), np.zeros(4), np.ones(4), arch="cbow",
                         extra_pairs=GlobalContext(np.array([1])))


def test_split_booked_sessions_keeps_a_final_booking(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("session_id,item_id,timestamp,booked,market\n"
                    "a,x,1,0,m\na,y,2,1,m\na,z,3,0,m\n"      # booking y stays in training
                    "b,x,1,0,m\nb,y,2,0,m\nb,z,3,1,m\n"      # booking z ends the session: it stays, y is held out
                    "c,x,1,0,m\n")                             # single event: dropped
    log = read_session_csv(str(path))
    train, booked, held, dropped = split_booked_sessions(log)
    x, y, z = (log.item_names.index(n) for n in "xyz")
    assert [t.tolist() for t in train] == [[x, y], [x, z]]
    assert booked.tolist() == [y, z] and dropped == 1
    assert held == [(y, z, {x, y}), (x, y, {x})]
