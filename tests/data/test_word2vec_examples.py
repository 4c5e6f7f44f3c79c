"""twotower.data.word2vec_examples: the per-epoch tf.data stream."""

import numpy as np
import pytest

from twotower.data.word2vec_examples import Word2VecExamples


def make(arch="sg", **kw):
    ids = np.arange(400, dtype=np.int32) % 20
    sids = np.repeat(np.arange(20), 20)
    counts = np.bincount(ids, minlength=20)
    return Word2VecExamples(ids, sids, counts, arch=arch, window=3, sample=0, seed=1, **kw)


def test_epochs_are_redrawn_and_deterministic():
    ex = make()
    q0, i0 = ex.epoch(0)
    q0b, _ = ex.epoch(0)
    q1, _ = ex.epoch(1)
    np.testing.assert_array_equal(q0, q0b)
    assert len(q0) != len(q1) or (q0 != q1).any()


def test_dataset_batches_cover_every_example_with_progress():
    ex = make()
    n0, n1 = len(ex.epoch(0)[1]), len(ex.epoch(1)[1])
    batches = list(ex.dataset(2, 64))
    sizes = [int(b["item"].shape[0]) for b in batches]
    assert sum(sizes) == n0 + n1 and max(sizes) == 64
    progress = np.concatenate([b["progress"].numpy() for b in batches])
    assert progress[0] == 0 and progress[-1] < 1 and np.all(np.diff(progress) >= 0)


def test_stacked_batches_and_cbow_padding():
    ex = make("cbow")
    els = list(ex.dataset(1, 32, steps_per_element=4))
    assert els[0]["query"].shape[1:] == (32, 6)
    assert sum(int(np.prod(e["item"].shape)) for e in els) == len(ex.epoch(0)[1])
    q = els[0]["query"].numpy()
    assert (q == 0).any()                          # 0 = padding (reduced windows)
    assert ((q[q > 0] - 1) < 20).all()             # word w is w + 1
    assert (q > 0).any(axis=-1).all()              # every example has a context word


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="arch must be one of .* got 'skip'"):
        make("skip")
    with pytest.raises(ValueError, match="at least 2 are needed"):
        Word2VecExamples([3], [0], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        make().dataset(1, 0)


def test_the_stream_is_the_same_on_every_run_so_a_resume_can_skip_into_it():
    first = list(make().dataset(3, 64, steps_per_element=2))
    again = list(make().dataset(3, 64, steps_per_element=2).skip(4))
    assert len(again) == len(first) - 4
    for a, b in zip(first[4:], again):
        for key in ("query", "item", "progress"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


@pytest.mark.parametrize("arch,steps", [("sg", 1), ("sg", 3), ("cbow", 2)])
def test_numpy_batches_are_the_dataset_stream(arch, steps):
    ex = make(arch)
    plain = list(ex.batches(2, 48, steps_per_element=steps, prefetch=False))
    ahead = list(ex.batches(2, 48, steps_per_element=steps))
    tfdata = list(ex.dataset(2, 48, steps_per_element=steps))
    assert len(plain) == len(ahead) == len(tfdata) > 2
    for a, b, c in zip(plain, ahead, tfdata):
        for key in ("query", "item", "progress"):
            np.testing.assert_array_equal(a[key], b[key])
            np.testing.assert_array_equal(a[key], c[key].numpy())
    n = sum(len(ex.epoch(e)[1]) for e in range(2))
    assert sum(int(np.prod(b["item"].shape)) for b in plain) == n


def test_text_order_keeps_a_centres_pairs_together_left_to_right():
    ids = np.arange(12, dtype=np.int32)
    sids = np.zeros(12, np.int32)
    ex = Word2VecExamples(ids, sids, np.ones(12), window=2, sample=0, seed=0, shuffle=False)
    context, centre = ex.epoch(0)                        # word2vec.c: contexts predict it
    assert np.all(np.diff(centre) >= 0)                  # centres in text order
    for c in np.unique(centre):
        ctx = context[centre == c]
        assert np.all(np.diff(ctx) > 0) and 0 < np.abs(ctx - c).max() <= 2
    shuffled = make().epoch(0)
    ordered = make(shuffle=False).epoch(0)[::-1]        # (centre, context) again
    pairs = [sorted(zip(*(x.tolist() for x in p))) for p in (shuffled, ordered)]
    assert pairs[0] == pairs[1]                          # the same pairs, reordered
