import numpy as np
import pytest
import tensorflow as tf

from twotower.losses import MASK, Triplet, triplet_loss


def reference_impl(z, label, margin, mining):
    pos = z[label]
    neg = np.delete(z, label)
    neg = neg[neg > MASK / 2]
    if neg.size == 0:
        return 0.0
    if mining == "all":
        return np.maximum(0, margin - pos + neg).sum()
    if mining == "hardest":
        return max(0.0, margin - pos + neg.max())
    # FaceNet's semi-hard band s⁺ − m < s⁻ < s⁺; none in it: 0 if some negative is below
    # the positive (they all satisfy the margin), else the easiest negative (tf_addons)
    band = neg[(neg < pos) & (neg > pos - margin)]
    if band.size:
        return margin - pos + band.max()
    if (neg < pos).any():
        return 0.0
    return max(0.0, margin - pos + neg.min())


@pytest.mark.parametrize("mining", ["all", "hardest", "semi-hard"])
def test_matches_numpy_reference_values_and_gradients(rng, grads, mining):
    numeric_grad, tf_value_and_grad = grads
    z = rng.normal(size=(6, 5)) * 0.3
    labels = rng.integers(0, 5, size=6)
    ref = lambda x: sum(reference_impl(x[i], labels[i], 0.2, mining) for i in range(6))
    value, grad = tf_value_and_grad(
        lambda x: triplet_loss(x, labels, margin=0.2, mining=mining), z)
    np.testing.assert_allclose(value, ref(z), rtol=1e-9)
    np.testing.assert_allclose(grad, numeric_grad(ref, z), atol=1e-5)


def test_each_mining_mode_picks_what_it_says():
    # positive 0.5; negatives 0.9 (hardest, above the positive), 0.4 (semi-hard: the
    # hardest one below the positive), 0.1 (easy). margin 0.2.
    z = np.array([[0.5, 0.9, 0.4, 0.1]], np.float32)
    hardest = triplet_loss(z, [0], margin=0.2, mining="hardest").numpy()[0]
    semi = triplet_loss(z, [0], margin=0.2, mining="semi-hard").numpy()[0]
    every = triplet_loss(z, [0], margin=0.2, mining="all").numpy()[0]
    assert hardest == pytest.approx(0.2 - 0.5 + 0.9)            # 0.6, uses 0.9
    assert semi == pytest.approx(0.2 - 0.5 + 0.4)               # 0.1, uses 0.4
    assert every == pytest.approx(0.6 + 0.1 + 0.0)  # the easy 0.1 is outside the margin
    # no negative below the positive → semi-hard falls back to the easiest (0.4), not the
    # hardest (0.9)
    z2 = np.array([[0.1, 0.9, 0.4]], np.float32)
    assert triplet_loss(z2, [0], margin=0.2, mining="semi-hard").numpy()[0] == pytest.approx(0.5)


def test_semi_hard_uses_the_margin_band():
    m = 0.2
    # 0.45 is in the band (0.3, 0.5); 0.49 too and harder: chosen. 0.9 is above the positive.
    z = np.array([[0.5, 0.9, 0.45, 0.49, 0.1]], np.float32)
    assert triplet_loss(z, [0], margin=m, mining="semi-hard").numpy()[0] == pytest.approx(
        m - 0.5 + 0.49)
    # below the positive but outside the band (≤ 0.3), with a hard one above: FaceNet's
    # semi-hard set is empty and the below-positive negatives already satisfy the margin
    z = np.array([[0.5, 0.9, 0.25, 0.1]], np.float32)
    assert triplet_loss(z, [0], margin=m, mining="semi-hard").numpy()[0] == 0.0
    # the old rule (hardest below the positive, no band) agrees on loss here, the band
    # changes which rows train: a row with every negative far below has zero loss
    z = np.array([[0.9, 0.1, 0.2]], np.float32)
    assert triplet_loss(z, [0], margin=m, mining="semi-hard").numpy()[0] == 0.0
    # gradient flows only to the chosen semi-hard negative and the positive
    x = tf.Variable([[0.5, 0.9, 0.45, 0.49, 0.1]])
    with tf.GradientTape() as tape:
        loss = triplet_loss(x, [0], margin=m, mining="semi-hard")
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-1, 0, 0, 1, 0]])


def test_semi_hard_fallback_ignores_masked_columns():
    # every real negative above the positive, one masked: the easiest REAL one is used
    z = np.array([[0.1, 0.9, MASK, 0.4]], np.float32)
    assert triplet_loss(z, [0], margin=0.2, mining="semi-hard").numpy()[0] == pytest.approx(0.5)


def test_masked_negatives_are_never_mined():
    z = np.array([[0.5, MASK, 0.3]], np.float32)
    assert triplet_loss(z, [0], margin=0.2, mining="hardest").numpy()[0] == pytest.approx(0.0)
    only_masked = np.array([[0.5, MASK]], np.float32)
    assert triplet_loss(only_masked, [0], mining="hardest").numpy()[0] == 0.0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mining must be one of"):
        Triplet(mining="easiest")
    with pytest.raises(ValueError, match="margin must be > 0, got -1"):
        triplet_loss(np.zeros((1, 2)), [0], margin=-1)
    t = Triplet(margin=0.3, mining="semi-hard")
    t2 = Triplet.from_config(t.get_config())
    assert (t2.margin, t2.mining) == (0.3, "semi-hard")
