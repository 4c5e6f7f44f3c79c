"""twotower.training.sgd_trainer: per-example sparse SGD equals word2vec's update."""

import math
import warnings

import numpy as np
import pytest
import tensorflow as tf

from twotower.data.samplers import Sampler, UniformSampler, UnigramSampler
from twotower.losses import HierarchicalSoftmax, RetrievalLoss, SampledNegatives
from twotower.towers import IDTower, PooledIDTower, TwoTowerModel
from twotower.training.sgd_trainer import SparseSGDTrainer

V, D, K = 6, 4, 3
NEG_ID = 5


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


class Fixed(Sampler):
    """A user's sampler: given probabilities; the base class builds its alias table."""

    def __init__(self, probabilities):
        super().__init__()
        self.p = np.asarray(probabilities, np.float64)

    @property
    def probabilities(self):
        return self.p

    def get_config(self):
        return {"probabilities": self.p.tolist()}


class Adaptive(Fixed):
    """A sampler whose draws are not i.i.d. from fixed probabilities: no alias table."""

    def alias_table(self):
        return None

    def sample_tf(self, shape, seed=None):  # e.g. a distribution that moves in training
        return tf.random.uniform(shape, 0, len(self.p), dtype=tf.int64, seed=seed)


def model_with(query_tower, head="neg", counts=None, sampler=None):
    counts = np.eye(V)[NEG_ID] if counts is None else counts  # every negative is NEG_ID
    sampler = UnigramSampler(counts, 0.75) if sampler is None else sampler
    item = IDTower(V, D, embeddings_initializer="glorot_uniform", validate_ids=False)
    if head == "hs":
        loss = RetrievalLoss(HierarchicalSoftmax(np.arange(1, V + 1), D), candidates=None)
    else:
        loss = RetrievalLoss(head, SampledNegatives(sampler, K, shared=False))
    model = TwoTowerModel(query_tower, item, loss)
    probe = [[1]] if isinstance(query_tower, PooledIDTower) else [0]
    model({"query": tf.constant(probe), "item": tf.constant([0])})
    if head == "hs":
        loss(query_tower(tf.constant(probe)), None, tf.constant([0]))
    return model


@pytest.mark.parametrize("sampler", ["unigram", "user"])
def test_skipgram_neg_step_matches_word2vec(sampler):
    # every negative is NEG_ID: UnigramSampler(one-hot counts), or a user's Sampler with
    # one-hot probabilities, drawn by the compiled step from its alias table
    tf.random.set_seed(0)
    model = model_with(IDTower(V, D, validate_ids=False),
                       sampler=Fixed(np.eye(V)[NEG_ID]) if sampler == "user" else None)
    W, Wo = model.query_tower.embeddings.numpy(), model.item_tower.embeddings.numpy()
    trainer = SparseSGDTrainer(model, engine="batched", alpha=0.5, min_alpha=0.1, curvature_cap=math.inf)
    assert trainer._kernel is not None          # the compiled word2vec step, not autodiff
    centre, ctx, progress = [1, 2], [3, 4], [0.0, 0.5]
    trainer.train_step({"query": tf.constant(centre), "item": tf.constant(ctx),
                        "progress": tf.constant(progress)})
    W_ref, Wo_ref = W.copy(), Wo.copy()
    for c, x, p in zip(centre, ctx, progress):   # word2vec.c: g = (label − σ(f))·α
        lr = 0.5 - 0.4 * p
        u = W[c]
        g_pos = (1 - sigmoid(u @ Wo[x])) * lr
        g_neg = (0 - sigmoid(u @ Wo[NEG_ID])) * lr
        W_ref[c] += g_pos * Wo[x] + K * g_neg * Wo[NEG_ID]
        Wo_ref[x] += g_pos * u
        Wo_ref[NEG_ID] += K * g_neg * u
    np.testing.assert_allclose(model.query_tower.embeddings.numpy(), W_ref, atol=1e-5)
    np.testing.assert_allclose(model.item_tower.embeddings.numpy(), Wo_ref, atol=1e-5)
    untouched = [0, 3, 4, 5]                      # sparse: rows not used stay as they were
    np.testing.assert_array_equal(model.query_tower.embeddings.numpy()[untouched], W[untouched])


def word2vec_batch_update(W, Wo, centre, ctx, lr, cap=np.inf):
    """word2vec.c's NEG update of one batch (every negative is NEG_ID), gradients summed
    over the batch and applied at once, each row's sum divided by max(1, n / cap) for the
    n updates landing on it; returns the summed loss."""
    dW, dWo, loss = np.zeros_like(W), np.zeros_like(Wo), 0.0
    nW, nWo = np.zeros(len(W)), np.zeros(len(Wo))
    for c, x, a in zip(centre, ctx, lr):
        if a > 0:
            nW[c] += 1
            nWo[x] += 1
            nWo[NEG_ID] += K
        u = W[c]
        s_pos, s_neg = u @ Wo[x], u @ Wo[NEG_ID]
        loss += -np.log(sigmoid(s_pos)) - K * np.log(sigmoid(-s_neg))
        g_pos, g_neg = (1 - sigmoid(s_pos)) * a, -sigmoid(s_neg) * a
        dW[c] += g_pos * Wo[x] + K * g_neg * Wo[NEG_ID]
        dWo[x] += g_pos * u
        dWo[NEG_ID] += K * g_neg * u
    W += dW / np.maximum(1, nW / cap)[:, None]
    Wo += dWo / np.maximum(1, nWo / cap)[:, None]
    return loss


def test_stacks_short_stacks_and_short_batches_match_word2vec():
    # Elements as the word2vec dataset yields them: full stacks [S, B], a shorter stack
    # [S' < S, B] and an epoch's short last batch [1, t]; they run padded to the first
    # element's [S, B], and the padding must change nothing.
    tf.random.set_seed(5)
    model = model_with(IDTower(V, D, validate_ids=False))
    model.item_tower.embeddings.assign(tf.random.normal([V, D], seed=6))
    W, Wo = model.query_tower.embeddings.numpy(), model.item_tower.embeddings.numpy()
    # The count bound (curvature_cap=None) with c = 4: NEG_ID takes K = 3 updates from
    # every example, so the bound is active on it in every batch of 2 or more.
    trainer = SparseSGDTrainer(model, engine="batched", alpha=0.4, min_alpha=0.1, curvature_cap=None,
                               row_step_cap=4)
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (1, 4), (1, 3), (3, 4), (1, 1)]
    elements = [{"query": rng.integers(0, V, s).astype(np.int32),
                 "item": rng.integers(0, NEG_ID, s).astype(np.int32),
                 "progress": rng.uniform(0, 1, s).astype(np.float32)} for s in shapes]
    result = trainer.fit(elements, progress=False)
    loss = 0.0
    for e in elements:
        for q, x, p in zip(e["query"], e["item"], e["progress"]):
            loss += word2vec_batch_update(W, Wo, q, x, 0.4 - 0.3 * p, trainer.row_step_cap)
    np.testing.assert_allclose(model.query_tower.embeddings.numpy(), W, atol=1e-5)
    np.testing.assert_allclose(model.item_tower.embeddings.numpy(), Wo, atol=1e-5)
    assert result["examples"] == sum(a * b for a, b in shapes)
    np.testing.assert_allclose(result["mean_loss"], loss / result["examples"], rtol=1e-4)


def test_curvature_bound_matches_its_formula():
    # Each row's summed step is divided by max(1, T / tau), T = Σ lr·σ'(z)·|x|² over the
    # batch's updates of that row (x: the other side's vector); NEG_ID, hit K times by
    # every example at a large alpha, is bound; the others are not.
    tf.random.set_seed(9)
    model = model_with(IDTower(V, D, validate_ids=False))
    model.item_tower.embeddings.assign(tf.random.normal([V, D], seed=10))
    model.query_tower.embeddings.assign(0.3 * tf.random.normal([V, D], seed=12))
    W, Wo = model.query_tower.embeddings.numpy(), model.item_tower.embeddings.numpy()
    tau, lr = 0.5, 1.5
    trainer = SparseSGDTrainer(model, engine="batched", alpha=lr, min_alpha=lr, curvature_cap=tau)
    centre, ctx = np.array([0, 1, 2, 0, 3, 4]), np.array([1, 2, 3, 4, 0, 1])
    trainer.train_step({"query": tf.constant(centre), "item": tf.constant(ctx),
                        "progress": tf.zeros([6])})
    dW, dWo, TW, TWo = (np.zeros_like(W), np.zeros_like(Wo), np.zeros(V), np.zeros(V))
    for c, x in zip(centre, ctx):
        u = W[c]
        s_pos, s_neg = u @ Wo[x], u @ Wo[NEG_ID]
        g_pos, g_neg = (1 - sigmoid(s_pos)) * lr, -sigmoid(s_neg) * lr
        h_pos = lr * sigmoid(s_pos) * sigmoid(-s_pos)
        h_neg = lr * sigmoid(s_neg) * sigmoid(-s_neg)
        dW[c] += g_pos * Wo[x] + K * g_neg * Wo[NEG_ID]
        TW[c] += h_pos * Wo[x] @ Wo[x] + K * h_neg * Wo[NEG_ID] @ Wo[NEG_ID]
        dWo[x] += g_pos * u
        dWo[NEG_ID] += K * g_neg * u
        TWo[x] += h_pos * u @ u
        TWo[NEG_ID] += K * h_neg * u @ u
    assert TWo[NEG_ID] > tau  # the bound is active where many updates land
    W += dW / np.maximum(1, TW / tau)[:, None]
    Wo += dWo / np.maximum(1, TWo / tau)[:, None]
    np.testing.assert_allclose(model.query_tower.embeddings.numpy(), W, atol=1e-5)
    np.testing.assert_allclose(model.item_tower.embeddings.numpy(), Wo, atol=1e-5)


def test_large_batches_of_one_hot_row_stay_finite():
    # Every example of a 4096 batch hits row 0 (query) and row 1 (item): the plain sum
    # overshoots by thousands of steps at once, the curvature bound does not.
    counts = np.ones(V)
    largest = {}
    for cap in (math.inf, 1.0):
        tf.random.set_seed(11)
        model = model_with(IDTower(V, D, embeddings_initializer="ones", validate_ids=False),
                           counts=counts)
        trainer = SparseSGDTrainer(model, engine="batched", alpha=0.025, min_alpha=0.025, curvature_cap=cap)
        q = np.zeros(4096, np.int32)
        for _ in range(20):
            trainer.train_step({"query": q, "item": q + 1, "progress": np.zeros(4096, np.float32)})
        emb = np.concatenate([model.query_tower.embeddings.numpy(),
                              model.item_tower.embeddings.numpy()])
        largest[cap] = np.abs(emb).max() if np.all(np.isfinite(emb)) else np.inf
    assert largest[1.0] < 5 and largest[math.inf] > 10 * largest[1.0]


class BranchyIDTower(IDTower):
    """An IDTower with Python control flow on a tensor (needs AutoGraph in a graph)."""

    def call(self, ids):
        if tf.reduce_min(ids) >= 0:
            return tf.gather(self.embeddings, ids)
        return tf.zeros([tf.shape(ids)[0], self.dim])


def test_a_tower_with_python_control_flow_still_trains_exactly():
    # The compiled step is traced without AutoGraph; such a tower makes it trace again
    # with AutoGraph, and the update is still word2vec's.
    tf.random.set_seed(7)
    model = model_with(BranchyIDTower(V, D, validate_ids=False))
    model.item_tower.embeddings.assign(tf.random.normal([V, D], seed=8))
    W, Wo = model.query_tower.embeddings.numpy(), model.item_tower.embeddings.numpy()
    trainer = SparseSGDTrainer(model, engine="batched", alpha=0.3, min_alpha=0.3)
    trainer.train_step({"query": tf.constant([1, 2, 1]), "item": tf.constant([3, 4, 0]),
                        "progress": tf.zeros([3])})
    word2vec_batch_update(W, Wo, [1, 2, 1], [3, 4, 0], [0.3] * 3, trainer.row_step_cap)
    np.testing.assert_allclose(model.query_tower.embeddings.numpy(), W, atol=1e-5)
    np.testing.assert_allclose(model.item_tower.embeddings.numpy(), Wo, atol=1e-5)


@pytest.mark.parametrize("pooled_gradient,scale", [("sum", 1.0), ("mean", 0.5)])
def test_cbow_context_rows_get_word2vec_gradient(pooled_gradient, scale):
    tf.random.set_seed(1)
    model = model_with(PooledIDTower(V + 1, D, validate_ids=False))
    W, Wo = model.query_tower.embeddings.numpy(), model.item_tower.embeddings.numpy()
    trainer = SparseSGDTrainer(model, engine="batched", alpha=0.3, min_alpha=0.3, pooled_gradient=pooled_gradient,
                               curvature_cap=math.inf)
    ctx = [[2, 4, 0, 0]]                           # words 1 and 3, two padding slots
    trainer.train_step({"query": tf.constant(ctx), "item": tf.constant([2]),
                        "progress": tf.constant([0.0])})
    h = (W[2] + W[4]) / 2                          # mean of the context
    g_pos = (1 - sigmoid(h @ Wo[2])) * 0.3
    g_neg = -sigmoid(h @ Wo[NEG_ID]) * 0.3
    neu1e = g_pos * Wo[2] + K * g_neg * Wo[NEG_ID]
    new = model.query_tower.embeddings.numpy()
    np.testing.assert_allclose(new[2], W[2] + scale * neu1e, atol=1e-5)
    np.testing.assert_allclose(new[4], W[4] + scale * neu1e, atol=1e-5)
    np.testing.assert_array_equal(new[0], W[0])    # padding row untouched


@pytest.mark.parametrize("engine", ["batched", "hogwild"])
def test_fit_lowers_the_loss_on_planted_pairs(engine):
    tf.random.set_seed(2)
    counts = np.ones(V)
    model = model_with(IDTower(V, D, validate_ids=False), counts=counts)
    trainer = SparseSGDTrainer(model, alpha=0.2, min_alpha=0.01, engine=engine)
    assert trainer.engine == engine
    q = np.array([0, 1, 2, 3, 4, 5] * 20, np.int32)
    x = (q + 1) % V                                # planted: i → i + 1
    first = trainer.per_example_loss(tf.constant(q), tf.constant(x)).numpy().mean()
    ds = tf.data.Dataset.from_tensor_slices(
        {"query": q, "item": x, "progress": np.linspace(0, 1, len(q), endpoint=False,
                                                        dtype=np.float32)}).repeat(5).batch(24)
    result = trainer.fit(ds, progress=False)
    last = trainer.per_example_loss(tf.constant(q), tf.constant(x)).numpy().mean()
    assert result["examples"] == 600 and last < first - 0.5


def test_hierarchical_softmax_head_trains():
    tf.random.set_seed(3)
    model = model_with(IDTower(V, D, validate_ids=False), head="hs")
    trainer = SparseSGDTrainer(model, engine="batched", alpha=0.5, min_alpha=0.5)
    q, x = tf.constant([0, 1, 2]), tf.constant([3, 4, 5])
    before = trainer.per_example_loss(q, x).numpy().sum()
    for _ in range(20):
        trainer.train_step({"query": q, "item": x, "progress": tf.zeros([3])})
    assert trainer.per_example_loss(q, x).numpy().sum() < before


def test_bad_settings_are_named():
    model = model_with(IDTower(V, D, validate_ids=False))
    with pytest.raises(ValueError, match="alpha must be a finite number > 0, got 0"):
        SparseSGDTrainer(model, alpha=0)
    with pytest.raises(ValueError, match=r"min_alpha must be in \[0, alpha=0.1\], got 0.2"):
        SparseSGDTrainer(model, alpha=0.1, min_alpha=0.2)
    with pytest.raises(ValueError, match="pooled_gradient must be one of"):
        SparseSGDTrainer(model, pooled_gradient="max")
    with pytest.raises(ValueError, match="engine must be one of .*, got 'fast'"):
        SparseSGDTrainer(model, engine="fast")
    with pytest.raises(ValueError, match="threads must be an int >= 1, got 0"):
        SparseSGDTrainer(model, threads=0)


def test_auto_engine_is_hogwild_for_word2vec_models_only():
    assert SparseSGDTrainer(model_with(IDTower(V, D, validate_ids=False))).engine == "hogwild"
    custom = model_with(IDTower(V, D, validate_ids=False), head="softmax")  # sampled softmax
    assert SparseSGDTrainer(custom).engine == "batched"
    with pytest.raises(ValueError, match="engine='hogwild' applies only to word2vec's own"):
        SparseSGDTrainer(custom, engine="hogwild")


def test_divergence_is_reported():
    tf.random.set_seed(4)
    model = model_with(IDTower(V, D, embeddings_initializer="ones", validate_ids=False),
                       counts=np.ones(V))
    trainer = SparseSGDTrainer(model, engine="batched", alpha=1e30, min_alpha=1e30, curvature_cap=math.inf)
    q = np.zeros(64, np.int32)                     # every update lands on row 0
    ds = tf.data.Dataset.from_tensor_slices(
        {"query": q, "item": q + 1, "progress": np.zeros(64, np.float32)}).repeat(4).batch(64)
    with pytest.raises(FloatingPointError, match="between examples 64 and 128: .*smaller alpha "
                                                 r"\(this one: 1e\+30\).*this one: 64"):
        trainer.fit(ds, progress=False, log_every=1)


@pytest.mark.parametrize("engine", ["hogwild", "batched"])
def test_fast_engines_draw_from_any_samplers_alias_table(engine):
    # The user's sampler puts all its mass on NEG_ID: whichever fast engine trains, the
    # item rows that move are the positives' and NEG_ID's, nothing else.
    tf.random.set_seed(6)
    model = model_with(IDTower(V, D, validate_ids=False), sampler=Fixed(np.eye(V)[NEG_ID]))
    trainer = SparseSGDTrainer(model, alpha=0.1, min_alpha=0.1, engine=engine, threads=1)
    assert trainer.engine == engine and trainer._kernel is not None
    before = model.item_tower.embeddings.numpy()
    q = np.array([0, 1, 2, 3] * 4, np.int32)
    trainer.fit([{"query": q, "item": (q % 2) + 1, "progress": np.zeros(16, np.float32)}],
                progress=False)
    moved = np.flatnonzero(np.any(model.item_tower.embeddings.numpy() != before, axis=1))
    np.testing.assert_array_equal(moved, [1, 2, NEG_ID])


def test_uniform_negatives_run_the_hogwild_engine():
    tf.random.set_seed(2)
    model = model_with(IDTower(V, D, validate_ids=False), sampler=UniformSampler(V))
    trainer = SparseSGDTrainer(model, alpha=0.2, min_alpha=0.01)
    assert trainer.engine == "hogwild"
    before = model.item_tower.embeddings.numpy()
    q = np.array([0, 1, 2, 3, 4, 5] * 20, np.int32)
    x = (q + 1) % V
    first = trainer.per_example_loss(tf.constant(q), tf.constant(x)).numpy().mean()
    ds = tf.data.Dataset.from_tensor_slices(
        {"query": q, "item": x, "progress": np.linspace(0, 1, len(q), endpoint=False,
                                                        dtype=np.float32)}).repeat(5).batch(24)
    trainer.fit(ds, progress=False)
    last = trainer.per_example_loss(tf.constant(q), tf.constant(x)).numpy().mean()
    assert last < first - 0.5
    assert np.all(np.any(model.item_tower.embeddings.numpy() != before, axis=1))


def test_a_sampler_the_fast_engines_cannot_use_is_named():
    model = model_with(IDTower(V, D, validate_ids=False), sampler=Adaptive(np.ones(V) / V))
    with pytest.raises(ValueError, match="engine='hogwild' applies only.*the sampler Adaptive "
                                         "gives no alias table"):
        SparseSGDTrainer(model, engine="hogwild")
    for engine in ("auto", "batched"):
        with pytest.warns(UserWarning, match="the sampler Adaptive gives no alias table.*"
                                             "hogwild.*autodiff step"):
            trainer = SparseSGDTrainer(model, engine=engine)
        assert trainer.engine == "batched" and trainer._kernel is None
    before = model.item_tower.embeddings.numpy()   # the autodiff step still trains it
    trainer.train_step({"query": tf.constant([0, 1]), "item": tf.constant([2, 3]),
                        "progress": tf.zeros([2])})
    assert np.any(model.item_tower.embeddings.numpy() != before)
    with warnings.catch_warnings():                # word2vec's own samplers: no warning
        warnings.simplefilter("error")
        SparseSGDTrainer(model_with(IDTower(V, D, validate_ids=False)))
        SparseSGDTrainer(model_with(IDTower(V, D, validate_ids=False), head="softmax"))
