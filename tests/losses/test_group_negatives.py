import numpy as np
import pytest
import tensorflow as tf

from twotower.data.samplers import UnigramSampler
from twotower.losses import ConcatNegatives, GroupNegatives, RetrievalLoss, SampledNegatives
from twotower.losses.sigmoid import sigmoid_loss

GROUPS = np.array([0, 0, 1, 1, 1, 2, -1])  # item 6 belongs to no group


def test_draws_stay_in_the_anchor_group_and_are_uniform_there():
    src = GroupNegatives(GROUPS, 4000, anchor="query")
    draws = src.draw(tf.constant([0, 0]), query_ids=tf.constant([3, 5])).numpy()
    assert set(draws[0]) == {2, 3, 4} and set(draws[1]) == {5}
    np.testing.assert_allclose(np.bincount(draws[0], minlength=5)[2:] / 4000, 1 / 3, atol=0.03)
    by_positive = GroupNegatives(GROUPS, 50, anchor="positive").draw(tf.constant([1]))
    assert set(by_positive.numpy()[0]) <= {0, 1}
    q = src.expected_count(tf.constant([2, 5])).numpy()
    np.testing.assert_allclose(q, [4000 / 3, 4000 / 1])


def test_concat_of_corpus_and_market_negatives_is_the_airbnb_neg_loss(rng):
    corpus = SampledNegatives(UnigramSampler(np.ones(7)), 3, shared=False)
    market = GroupNegatives(GROUPS, 2)
    layer = RetrievalLoss("neg", ConcatNegatives([corpus, market]))
    ids = tf.constant([0, 2])
    centres = tf.constant([1, 4])
    extra_ids = layer.draw(ids, training=True, query_ids=centres)
    assert extra_ids.shape == (2, 5)
    assert set(extra_ids.numpy()[1, 3:]) <= {2, 3, 4}  # the centre's market
    u, v = rng.normal(size=(2, 2, 3)).astype(np.float32)
    extra = rng.normal(size=(2, 5, 3)).astype(np.float32)
    got = layer(u, v, ids, extra, extra_ids).numpy()
    # reference: NEG over [positive, 5 negatives], accidental hits masked
    for i in range(2):
        z = np.concatenate([[u[i] @ v[i]], extra[i] @ u[i]])
        keep = [0] + [j + 1 for j in range(5) if extra_ids.numpy()[i, j] != ids.numpy()[i]]
        ref = sigmoid_loss(z[keep][np.newaxis].astype(np.float32), [0]).numpy()[0]
        assert got[i] == pytest.approx(ref, rel=1e-5)
    clone = RetrievalLoss.from_config(layer.get_config())
    assert [type(s).__name__ for s in clone.candidates.sources] == ["SampledNegatives",
                                                                     "GroupNegatives"]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="pass query_ids"):
        GroupNegatives(GROUPS, 2).draw(tf.constant([0]))
    with pytest.raises(ValueError, match="anchor must be 'query' or 'positive', got 'centre'"):
        GroupNegatives(GROUPS, 2, anchor="centre")
    with pytest.raises(ValueError, match="per-example sources"):
        ConcatNegatives([SampledNegatives(UnigramSampler([1, 1]), 2),
                         GroupNegatives(GROUPS, 1)])


def test_anchor_without_a_group_draws_from_every_grouped_item():
    groups = np.array([-1, 1, 1, 2])  # no item in group 0; item 0 has no group
    src = GroupNegatives(groups, 500)
    draws = src.draw(tf.constant([1]), query_ids=tf.constant([0])).numpy()
    assert set(draws[0]) == {1, 2, 3}  # never item 0 (no group), never a crash
    with pytest.raises(ValueError, match="at least one item a group"):
        GroupNegatives(np.array([-1, -1]), 2)
