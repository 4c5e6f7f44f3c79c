"""RetrievalLoss(logq="corrected"): the corrected logQ of Khrylchenko et al., "Correcting
the LogQ Correction: Revisiting Sampled Softmax for Large-Scale Retrieval" (RecSys 2025).

The numpy reference below is written in the form of the authors' code
(github.com/NonameUntitled/logq, train_in_batch_logq_new.py): per row, with the positive
c⁺ and its n kept negatives,

    Q'(c)  = q(c) / (1 − q(c⁺))                          the sampler given c ≠ c⁺, per draw
    term   = −s⁺ + log Σ_neg exp(s − log Q')             the positive not in the denominator
    P̂      = exp s⁺ / (exp s⁺ + (1/n) Σ_neg exp(s − log Q'))
    loss   = sg(1 − P̂) · term

twotower writes Q as an expected count (Q̃ = n·Q'), which takes sg(1 − P̂)·log n off the
value and leaves the gradient as it is: values are compared to loss − (1 − P̂)·log n, and
gradients to finite differences of Σ (1 − P̂)·term with the weights frozen at the point
(the stop-gradient), w.r.t. query and item embeddings.
"""

import numpy as np
import pytest
import tensorflow as tf

from twotower.data.frequency import StreamingFrequencyEstimator
from twotower.data.samplers import UniformSampler, UnigramSampler
from twotower.losses import (AllItems, CorrectedLogQSoftmax, GroupNegatives,
                             HierarchicalSoftmax, InBatch, MixedNegatives, RetrievalLoss,
                             SampledNegatives, Softmax, Triplet, corrected_logq_softmax_loss,
                             softmax_loss)
from twotower.towers import IDTower, TwoTowerModel

TAU = 0.5


def lse(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


def paper_row(s_pos, s_neg, q_neg, q_pos):
    """(term, weight 1 − P̂, n) of one row in the form of the authors' code (scores over τ)."""
    n = len(s_neg)
    if n == 0:
        return 0.0, 0.0, 0
    z = np.asarray(s_neg) - np.log(np.asarray(q_neg) / (1.0 - q_pos))
    term = lse(z) - s_pos
    p_hat = 1.0 / (1.0 + np.exp(lse(z) - np.log(n) - s_pos))
    return term, 1.0 - p_hat, n


def reference(rows_fn, x0):
    """(per-example values, weights, frozen-weight objective) for a pipeline whose rows
    rows_fn(x) = [(s⁺, s_neg, q_neg, q⁺), ...] depend on the varied embeddings x."""
    rows = [paper_row(*r) for r in rows_fn(x0)]
    values = np.array([w * (t - np.log(n)) if n else 0.0 for t, w, n in rows])
    weights = np.array([w for _, w, _ in rows])

    def frozen(x):
        return sum(w * paper_row(*r)[0] for w, r in zip(weights, rows_fn(x)))
    return values, weights, frozen


def check_against_reference(grads, loss_of, rows_fn, x0):
    """Per-example values and the gradient w.r.t. x0 of sum(loss_of(x)) vs the paper."""
    numeric_grad, tf_value_and_grad = grads
    values, weights, frozen = reference(rows_fn, x0)
    per_example = loss_of(tf.constant(x0, tf.float64)).numpy()
    np.testing.assert_allclose(per_example, values, rtol=1e-5, atol=1e-6)
    total, grad = tf_value_and_grad(loss_of, x0)
    np.testing.assert_allclose(total, values.sum(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad, numeric_grad(frozen, x0), rtol=1e-4, atol=1e-5)
    return weights


def f32(x):
    return tf.cast(x, tf.float32)


# ---- in-batch ---------------------------------------------------------------------------

IDS = np.array([1, 2, 2, 3, 5])  # id 2 twice: rows 1 and 2 are each other's accidental hit


def in_batch_rows(u, v, ids, p):
    rows = []
    for i in range(len(ids)):
        s = u[i] @ v.T / TAU
        neg = [j for j in range(len(ids)) if j != i and ids[j] != ids[i]]
        rows.append((s[i], s[neg], p[ids[neg]], p[ids[i]]))
    return rows


def test_in_batch_static_q_matches_the_paper(rng, grads):
    counts = rng.integers(1, 30, size=7).astype(float)
    p = counts / counts.sum()
    u, v = rng.normal(size=(2, len(IDS), 3))
    layer = RetrievalLoss("softmax", InBatch(frequencies=counts), temperature=TAU,
                          logq="corrected")
    assert isinstance(layer.head, CorrectedLogQSoftmax) and layer.logq == "corrected"
    weights = check_against_reference(
        grads, lambda uu: layer(f32(uu), f32(v), IDS),
        lambda uu: in_batch_rows(uu, v, IDS, p), u)
    assert np.any((weights > 0.05) & (weights < 0.95))  # the weight is not trivially 0 or 1
    # the item tower's side: v is both the positives and the negatives
    check_against_reference(grads, lambda vv: layer(f32(u), f32(vv), IDS),
                            lambda vv: in_batch_rows(u, vv, IDS, p), v)
    # and it is not the standard logQ (which would pass with −log Q on the positive)
    standard = RetrievalLoss("softmax", InBatch(frequencies=counts), temperature=TAU)
    assert standard.logq is True
    gap = np.abs(standard(f32(u), f32(v), IDS).numpy() - layer(f32(u), f32(v), IDS).numpy())
    assert gap.max() > 0.1


def test_in_batch_streaming_estimator_matches_the_paper(rng, grads):
    est = StreamingFrequencyEstimator(num_buckets=16, alpha=0.3)
    layer = RetrievalLoss("softmax", InBatch(frequencies=est), temperature=TAU,
                          logq="corrected")
    for _ in range(4):  # the estimator learns from the stream, as draw() does in a step
        layer.draw(tf.constant(rng.integers(0, 8, size=6)), training=True)
    p_hat = est(tf.constant(np.arange(16))).numpy().astype(np.float64)
    assert np.all(p_hat[IDS] < 0.9) and len(set(np.round(p_hat[IDS], 6))) > 2  # non-uniform
    u, v = rng.normal(size=(2, len(IDS), 3))
    check_against_reference(grads, lambda uu: layer(f32(uu), f32(v), IDS),
                            lambda uu: in_batch_rows(uu, v, IDS, p_hat), u)
    check_against_reference(grads, lambda vv: layer(f32(u), f32(vv), IDS),
                            lambda vv: in_batch_rows(u, vv, IDS, p_hat), v)


# ---- sampled ----------------------------------------------------------------------------

def sampled_rows(u, v, ids, extra, extra_ids, q):
    rows = []
    for i in range(len(ids)):
        e, e_ids = (extra[i], extra_ids[i]) if extra.ndim == 3 else (extra, extra_ids)
        keep = e_ids != ids[i]
        rows.append((u[i] @ v[i] / TAU, (e[keep] @ u[i]) / TAU, q[e_ids[keep]], q[ids[i]]))
    return rows


@pytest.mark.parametrize("shared", [True, False])
def test_sampled_negatives_match_the_paper(rng, grads, shared):
    n, k = 12, 4
    sampler = UnigramSampler(rng.integers(1, 40, size=n), power=0.75)
    q = sampler.probabilities
    ids = np.array([0, 3, 7])
    if shared:
        extra_ids = np.array([3, 5, 9, 3])  # 3 is row 1's positive, twice: hits
        extra = rng.normal(size=(k, 3))
    else:
        extra_ids = np.array([[4, 0, 2, 11], [3, 3, 8, 1], [7, 7, 7, 7]])  # row 2: all hits
        extra = rng.normal(size=(3, k, 3))
    u, v = rng.normal(size=(2, 3, 3))
    layer = RetrievalLoss("softmax", SampledNegatives(sampler, k, shared=shared),
                          temperature=TAU, logq="corrected")

    def loss(uu=u, vv=v, ee=extra):
        return layer(f32(uu), f32(vv), ids, f32(ee), tf.constant(extra_ids, tf.int64))

    weights = check_against_reference(
        grads, lambda uu: loss(uu=uu), lambda uu: sampled_rows(uu, v, ids, extra, extra_ids, q), u)
    check_against_reference(grads, lambda vv: loss(vv=vv),
                            lambda vv: sampled_rows(u, vv, ids, extra, extra_ids, q), v)
    check_against_reference(grads, lambda ee: loss(ee=ee),
                            lambda ee: sampled_rows(u, v, ids, ee, extra_ids, q), extra)
    if not shared:
        assert weights[2] == 0.0  # the positive alone: nothing to correct, weight 0


# ---- mixed ------------------------------------------------------------------------------

def mixed_rows(u, v, ids, extra, extra_ids, p, num_items):
    b, k = len(ids), len(extra_ids)
    cand = np.concatenate([v, extra])
    cand_ids = np.concatenate([ids, extra_ids])
    q_mix = (b * p[cand_ids] + k / num_items) / (b + k)  # per draw of the B + k columns
    q_pos = (b * p[ids] + k / num_items) / (b + k)
    rows = []
    for i in range(b):
        s = cand @ u[i] / TAU
        neg = [j for j in range(b + k) if j != i and cand_ids[j] != ids[i]]
        rows.append((s[i], s[neg], q_mix[neg], q_pos[i]))
    return rows


def test_mixed_negatives_match_the_paper(rng, grads):
    num_items, k = 10, 3
    counts = rng.integers(1, 25, size=num_items).astype(float)
    p = counts / counts.sum()
    extra_ids = np.array([2, 8, 5])  # 2 and 5 are batch positives: hits for their rows
    extra = rng.normal(size=(k, 3))
    u, v = rng.normal(size=(2, len(IDS), 3))
    layer = RetrievalLoss("softmax", MixedNegatives(k, num_items, frequencies=counts),
                          temperature=TAU, logq="corrected")

    def loss(uu=u, vv=v, ee=extra):
        return layer(f32(uu), f32(vv), IDS, f32(ee), tf.constant(extra_ids, tf.int64))

    check_against_reference(grads, lambda uu: loss(uu=uu),
                            lambda uu: mixed_rows(uu, v, IDS, extra, extra_ids, p, num_items), u)
    check_against_reference(grads, lambda vv: loss(vv=vv),
                            lambda vv: mixed_rows(u, vv, IDS, extra, extra_ids, p, num_items), v)
    check_against_reference(grads, lambda ee: loss(ee=ee),
                            lambda ee: mixed_rows(u, v, IDS, ee, extra_ids, p, num_items), extra)


# ---- limiting cases ---------------------------------------------------------------------

def test_the_head_has_the_softmax_gradient_of_its_logits(rng, grads):
    """d softplus(ℓ̃) = σ(ℓ̃) dℓ̃: on the same logits the corrected head and the plain
    softmax share their gradient; the values are σ(ℓ̃)·ℓ̃ and softplus(ℓ̃)."""
    _, tf_value_and_grad = grads
    z = rng.normal(size=(4, 5)) * 2
    z[1, 3] += -1e9  # a masked column
    z[3, 1:] += -1e9  # row 3: the positive alone
    labels = np.array([0, 2, 4, 0])
    _, g_corrected = tf_value_and_grad(lambda x: corrected_logq_softmax_loss(x, labels), z)
    _, g_softmax = tf_value_and_grad(lambda x: softmax_loss(x, labels), z)
    np.testing.assert_allclose(g_corrected, g_softmax, atol=1e-12)
    assert np.abs(g_corrected[:3]).max() > 0.05 and np.abs(g_corrected[3]).max() == 0.0
    values = corrected_logq_softmax_loss(z, labels).numpy()
    for i, label in enumerate(labels[:3]):
        rest = np.delete(z[i], label)
        ell = lse(rest[rest > -1e8]) - z[i, label]
        np.testing.assert_allclose(values[i], ell / (1 + np.exp(-ell)), rtol=1e-12)
    assert values[3] == 0.0
    # the docstring's example
    np.testing.assert_allclose(corrected_logq_softmax_loss([[2.0, 0, 0]], [0]).numpy(),
                               [(np.log(2) - 2) * 2 / (np.exp(2) + 2)], rtol=1e-6)


@pytest.mark.parametrize("source", ["sampled", "in-batch"])
def test_uniform_q_is_plain_softmax_reweighted(rng, grads, source):
    """Uniform q: Q̃ is one constant per row, so each row's gradient is the plain sampled
    softmax's (positive in the denominator, no logQ) times (1 − P̂)/(1 − P̃): P̃ is the
    positive's probability within the sample, P̂ the estimate over all N items."""
    _, tf_value_and_grad = grads
    num_items, d = 40, 3
    if source == "sampled":
        ids = np.array([0, 3, 7])
        extra_ids = np.array([[4, 0, 2, 11], [3, 5, 8, 1], [9, 12, 7, 7]])  # hits in rows 0, 1, 2
        extra = rng.normal(size=(3, 4, d))
        src = SampledNegatives(UniformSampler(num_items), 4, shared=False)

        def rows(uu, vv):
            return sampled_rows(uu, vv, ids, extra, extra_ids, np.full(num_items, 1 / num_items))
        args = (f32(extra), tf.constant(extra_ids, tf.int64))
    else:
        ids = IDS
        src = InBatch(frequencies=np.ones(num_items))

        def rows(uu, vv):
            return in_batch_rows(uu, vv, ids, np.full(num_items, 1 / num_items))
        args = ()
    u, v = rng.normal(size=(2, len(ids), d))
    corrected = RetrievalLoss("softmax", src, temperature=TAU, logq="corrected")
    plain = RetrievalLoss("softmax", src, temperature=TAU, logq=False)
    _, g_corrected = tf_value_and_grad(lambda uu: corrected(f32(uu), f32(v), ids, *args), u)
    _, g_plain = tf_value_and_grad(lambda uu: plain(f32(uu), f32(v), ids, *args), u)
    ratios = []
    for i, (s_pos, s_neg, _, _) in enumerate(rows(u, v)):
        n = len(s_neg)
        p_sample = 1 / (1 + np.exp(lse(s_neg) - s_pos))
        p_hat = 1 / (1 + np.exp(lse(s_neg) + np.log((num_items - 1) / n) - s_pos))
        ratios.append((1 - p_hat) / (1 - p_sample))
        np.testing.assert_allclose(g_corrected[i], ratios[-1] * g_plain[i], rtol=1e-4,
                                   atol=1e-6)
    assert max(ratios) > 1.05  # the reweighting is real, not the identity


def test_every_item_drawn_once_gives_the_full_softmax_gradient(rng, grads):
    """A batch holding each of the N items once, uniform Q: Q̃ = 1, P̂ is the full softmax
    probability, and the corrected gradient is the full softmax's (AllItems) exactly."""
    _, tf_value_and_grad = grads
    n, d = 6, 3
    table = rng.normal(size=(n, d))
    perm = rng.permutation(n)
    u = rng.normal(size=(n, d))
    corrected = RetrievalLoss("softmax", InBatch(frequencies=np.ones(n)), logq="corrected")
    full = RetrievalLoss("softmax", AllItems(n))
    all_ids = tf.range(n, dtype=tf.int64)
    _, gu_c = tf_value_and_grad(lambda uu: corrected(f32(uu), f32(table[perm]), perm), u)
    _, gu_f = tf_value_and_grad(lambda uu: full(f32(uu), f32(table[perm]), perm, f32(table),
                                                all_ids), u)
    np.testing.assert_allclose(gu_c, gu_f, rtol=1e-4, atol=1e-6)
    _, gv_c = tf_value_and_grad(lambda vv: corrected(f32(u), f32(vv), perm), table[perm])
    _, gt_f = tf_value_and_grad(lambda tt: full(f32(u), f32(table[perm]), perm, f32(tt),
                                                all_ids), table)
    np.testing.assert_allclose(gv_c, gt_f[perm], rtol=1e-4, atol=1e-6)
    # value: (1 − P)·(−log-odds of P), P the full softmax probability of the positive
    s = u @ table.T
    p_full = np.array([np.exp(s[i, perm[i]] - lse(s[i])) for i in range(n)])
    np.testing.assert_allclose(corrected(f32(u), f32(table[perm]), perm).numpy(),
                               (1 - p_full) * np.log((1 - p_full) / p_full), rtol=1e-4)


def test_the_positive_alone_has_weight_zero(rng, grads):
    _, tf_value_and_grad = grads
    counts = np.arange(1.0, 9.0)
    layer = RetrievalLoss("softmax", InBatch(frequencies=counts), logq="corrected")
    u, v = rng.normal(size=(2, 3, 4))
    for ids in (np.array([5]), np.array([2, 2, 2])):  # one candidate; every other one a hit
        b = len(ids)
        value, grad = tf_value_and_grad(lambda uu: layer(f32(uu), f32(v[:b]), ids), u[:b])
        assert value == 0.0 and np.all(grad == 0.0)
        _, grad_v = tf_value_and_grad(lambda vv: layer(f32(u[:b]), f32(vv), ids), v[:b])
        assert np.all(grad_v == 0.0)


def test_the_weight_is_the_probability_of_misclassification():
    """loss / ℓ̃ = 1 − P̂: it falls to 0 as the model puts all mass on the positive (P̂ → 1)
    and rises to 1 as it puts none there (where ℓ is ℓ̃, the positive out of the
    denominator)."""
    b = 3
    counts = np.array([1.0, 4.0, 9.0])
    p = counts / counts.sum()
    ids = np.arange(b)
    v = tf.eye(b)  # s(i, j) = α·[i = j]: the positive's score alone grows with α
    layer = RetrievalLoss("softmax", InBatch(frequencies=counts), logq="corrected")
    weights = []
    for alpha in (-8.0, 0.0, 2.0, 8.0, 30.0):
        u = tf.Variable(alpha * tf.eye(b))
        with tf.GradientTape() as tape:
            loss = layer(u, v, ids)
            total = tf.reduce_sum(loss)
        grad = tape.gradient(total, u).numpy()
        rows = [paper_row(alpha, np.zeros(b - 1), np.delete(p, i), p[i]) for i in range(b)]
        ell = np.array([t - np.log(n) for t, _, n in rows])
        w = np.array([w for _, w, _ in rows])
        # relative tolerance down to weights of 1e-13 (float32's sigmoid there: ~2e-4)
        np.testing.assert_allclose(loss.numpy(), w * ell, rtol=1e-3, atol=0)
        # d loss_i / d u_ii = −w_i (only the positive's score moves with u_ii)
        np.testing.assert_allclose(-np.diag(grad), w, rtol=1e-3, atol=0)
        weights.append(-np.diag(grad))
    weights = np.array(weights)
    assert np.all(np.diff(weights, axis=0) < 0)  # more mass on the positive, less weight
    assert weights[0].min() > 0.999 and weights[-1].max() < 1e-11


# ---- API --------------------------------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: RetrievalLoss("softmax", AllItems(10), logq="corrected"), "AllItems samples nothing"),
    (lambda: RetrievalLoss("nce", SampledNegatives(UniformSampler(10), 3), logq="corrected"),
     "softmax head only.*NCE"),
    (lambda: RetrievalLoss("neg", InBatch(np.ones(5)), logq="corrected"),
     "softmax head only.*NegativeSampling"),
    (lambda: RetrievalLoss(Triplet(), InBatch(np.ones(5)), logq="corrected"),
     "softmax head only.*Triplet"),
    (lambda: RetrievalLoss(HierarchicalSoftmax([1, 2, 3], 2), candidates=None, logq="corrected"),
     "softmax head only.*HierarchicalSoftmax"),
    (lambda: RetrievalLoss("softmax", InBatch(), logq="corrected"), "InBatch has no frequencies"),
    (lambda: RetrievalLoss("softmax", MixedNegatives(2, 10), logq="corrected"),
     "MixedNegatives has no frequencies"),
    (lambda: RetrievalLoss("softmax", GroupNegatives([0, 0, 1, 1], 1), logq="corrected"),
     "sampled from the catalogue.*GroupNegatives"),
    (lambda: RetrievalLoss("softmax", InBatch(np.ones(5)), logq="corrected",
                           num_hard_negatives=2), "num_hard_negatives=2"),
    (lambda: RetrievalLoss("softmax", InBatch(np.ones(5)), logq="corrected",
                           remove_accidental_hits=False), "remove_accidental_hits=True"),
])
def test_undefined_cases_are_refused_naming_the_argument(make, match):
    with pytest.raises(ValueError, match="logq='corrected'") as info:
        make()
    assert info.match(match)


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="logq must be None, True, False or 'corrected', "
                                         "got 'fixed'"):
        RetrievalLoss("softmax", InBatch(np.ones(5)), logq="fixed")
    for logq in (True, False):
        with pytest.raises(ValueError, match=f"CorrectedLogQSoftmax.*got logq={logq}"):
            RetrievalLoss(CorrectedLogQSoftmax(), InBatch(np.ones(5)), logq=logq)


def test_defaults_and_the_head_choose_the_mode(rng):
    counts = np.arange(1.0, 7.0)
    assert RetrievalLoss("softmax", InBatch(counts)).logq is True  # default unchanged
    assert type(RetrievalLoss("softmax", InBatch(counts)).head) is Softmax
    by_head = RetrievalLoss(CorrectedLogQSoftmax(), InBatch(counts))
    by_flag = RetrievalLoss(Softmax(), InBatch(counts), logq="corrected")
    assert by_head.logq == by_flag.logq == "corrected"
    u, v = rng.normal(size=(2, 4, 3)).astype(np.float32)
    ids = np.array([0, 1, 1, 4])
    np.testing.assert_array_equal(by_head(u, v, ids), by_flag(u, v, ids))


@pytest.mark.parametrize("make", [
    lambda: InBatch(frequencies=np.arange(1.0, 9.0)),
    lambda: InBatch(frequencies=StreamingFrequencyEstimator(num_buckets=8)),
    lambda: SampledNegatives(UnigramSampler(np.arange(1, 9)), 3, shared=False),
    lambda: MixedNegatives(2, 8, frequencies=np.arange(1.0, 9.0)),
])
def test_config_round_trip(rng, make):
    layer = RetrievalLoss("softmax", make(), temperature=0.3, logq="corrected")
    config = tf.keras.layers.serialize(layer)
    again = tf.keras.layers.deserialize(config)
    assert again.logq == "corrected" and isinstance(again.head, CorrectedLogQSoftmax)
    assert tf.keras.layers.serialize(again) == config
    u, v = rng.normal(size=(2, 4, 3)).astype(np.float32)
    ids = np.array([0, 5, 5, 7])
    extra_ids = layer.draw(tf.constant(ids))
    extra = None if extra_ids is None else tf.constant(
        rng.normal(size=list(extra_ids.shape) + [3]), tf.float32)
    np.testing.assert_array_equal(again(u, v, ids, extra, extra_ids),
                                  layer(u, v, ids, extra, extra_ids))


@pytest.mark.parametrize("make", [
    lambda: InBatch(frequencies=StreamingFrequencyEstimator(num_buckets=64, alpha=0.1)),
    lambda: SampledNegatives(UnigramSampler(np.arange(1, 41)), 16),
    lambda: MixedNegatives(8, 40, frequencies=np.arange(1.0, 41.0)),
])
def test_two_tower_model_trains_and_round_trips(rng, make):
    tf.keras.utils.set_random_seed(0)
    users, items = rng.integers(0, 30, size=128), rng.integers(0, 40, size=128)
    data = tf.data.Dataset.from_tensor_slices({"query": users, "item": items}).batch(32)
    model = TwoTowerModel(IDTower(30, 8), IDTower(40, 8),
                          RetrievalLoss("softmax", make(), temperature=0.2, logq="corrected"))
    model({"query": users[:2], "item": items[:2]})
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    history = model.fit(data, epochs=2, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    assert all(not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    config = model.get_config()
    again = TwoTowerModel.from_config(config)
    assert again.retrieval_loss.logq == "corrected"
    assert isinstance(again.retrieval_loss.head, CorrectedLogQSoftmax)
    assert type(again.retrieval_loss.candidates) is type(model.retrieval_loss.candidates)
    assert again.get_config()["loss"] == config["loss"]
