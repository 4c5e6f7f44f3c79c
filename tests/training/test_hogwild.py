"""twotower.training.hogwild: word2vec.c's per-example update, against plain numpy."""

import math

import numpy as np
import pytest

from twotower.data.huffman import HuffmanTree
from twotower.data.samplers import Sampler, UniformSampler, UnigramSampler
from twotower.training.hogwild import HogwildWord2Vec

V, D, K = 7, 5, 4
MASK = 2**64 - 1


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x):
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


class Fixed(Sampler):
    """A user's sampler: given probabilities, known to the kernel only through the alias
    table the base class builds from them."""

    def __init__(self, probabilities):
        super().__init__()
        self.p = np.asarray(probabilities, np.float64)

    @property
    def probabilities(self):
        return self.p

    def get_config(self):
        return {"probabilities": self.p.tolist()}


def draws(seed, sampler, count):
    """word2vec.c's generator r <- r*25214903917 + 11 (mod 2^64) through the alias table,
    as the kernel draws: a column from r >> 16, then a 24-bit coin from r >> 40."""
    table = sampler.alias_table()
    r, out = int(seed), []
    for _ in range(count):
        r = (r * 25214903917 + 11) & MASK
        col = (r >> 16) % table.num_items
        r = (r * 25214903917 + 11) & MASK
        coin = (r >> 40) / 16777216.0
        out.append(col if coin < table.prob[col] else int(table.alias[col]))
    return out


def reference(W, out, examples, alpha, min_alpha, targets_of, cbow=False, pooled_sum=True):
    """Sequential word2vec.c update in float64: per example, every logit from the rows
    before they move, then each row's step and the query's; returns the summed loss."""
    loss = 0.0
    for query, item, progress in examples:
        lr = alpha - (alpha - min_alpha) * progress
        ctx = [c for c in query if c != 0] if cbow else [query[0]]
        u = W[ctx].mean(axis=0) if cbow else W[ctx[0]].copy()
        rows, labels, shifts = targets_of(item)
        z = [float(u @ out[r]) - s for r, s in zip(rows, shifts)]
        e = np.zeros_like(u)
        for r, y, zt in zip(rows, labels, z):
            loss += softplus((1 - 2 * y) * zt)
            g = (y - sigmoid(zt)) * lr
            e += g * out[r]
            out[r] += g * u
        for c in ctx:
            W[c] += e if pooled_sum or not cbow else e / len(ctx)
    return loss


def tables(rows_q, rows_out, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.5, (rows_q, D)).astype(np.float32),
            rng.normal(0, 0.5, (rows_out, D)).astype(np.float32))


def seed_of(engine, seed):
    return int(np.random.SeedSequence([seed]).generate_state(engine.threads, np.uint64)[0])


SAMPLERS = {"unigram": lambda: UnigramSampler(np.array([40, 20, 10, 8, 5, 3, 1]), 0.75),
            "uniform": lambda: UniformSampler(V),
            "user": lambda: Fixed(np.arange(1.0, V + 1) / (V * (V + 1) / 2))}


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("logq", [False, True])
def test_skipgram_neg_and_nce_match_word2vec(logq, sampler):
    sampler = SAMPLERS[sampler]()
    log_kq = np.log(K * sampler.probabilities).astype(np.float32) if logq else None
    W, out = tables(V, V)
    query = np.array([[0], [3], [3], [6]])
    item = np.array([1, 2, 0, 5])
    progress = np.array([0.0, 0.25, 0.5, 0.75], np.float32)
    engine = HogwildWord2Vec(W, out, head="sigmoid", alias_table=sampler.alias_table(),
                             num_negatives=K, log_kq=log_kq, threads=1)
    Wr, outr = W.astype(np.float64), out.astype(np.float64)
    negatives = iter(draws(seed_of(engine, 11), sampler, K * len(item)))

    def targets(positive):
        negs = [c for c in (next(negatives) for _ in range(K)) if c != positive]
        rows = [positive] + negs
        shifts = [float(log_kq[r]) if logq else 0.0 for r in rows]
        return rows, [1.0] + [0.0] * len(negs), shifts

    want = reference(Wr, outr, zip(query, item, progress), 0.5, 0.1, targets)
    loss, count = engine.train(query, item, progress, alpha=0.5, min_alpha=0.1, seed=11)
    assert count == 4
    assert loss == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(W, Wr, atol=1e-5)
    np.testing.assert_allclose(out, outr, atol=1e-5)


@pytest.mark.parametrize("pooled_sum", [True, False])
def test_cbow_hs_matches_word2vec(pooled_sum):
    counts = np.array([30, 12, 9, 7, 4, 2, 1])
    tree = HuffmanTree(counts)
    W, nodes = tables(V + 1, tree.num_inner, seed=1)
    query = np.array([[2, 5, 0, 0], [1, 0, 0, 7], [3, 3, 4, 0]])   # ids + 1, 0 = padding
    item = np.array([0, 6, 2])
    progress = np.array([0.1, 0.2, 0.3], np.float32)
    engine = HogwildWord2Vec(W, nodes, head="hs", cbow=True, pooled_sum=pooled_sum,
                             tree=tree, threads=1)
    Wr, nr = W.astype(np.float64), nodes.astype(np.float64)

    def targets(leaf):
        n = tree.lengths[leaf]
        return (list(tree.points[leaf, :n]), [1.0 - c for c in tree.codes[leaf, :n]],
                [0.0] * n)

    want = reference(Wr, nr, zip(query, item, progress), 0.3, 0.0, targets, cbow=True,
                     pooled_sum=pooled_sum)
    loss, count = engine.train(query, item, progress, alpha=0.3, min_alpha=0.0, seed=0)
    assert count == 3 and loss == pytest.approx(want, rel=1e-5)
    np.testing.assert_allclose(W, Wr, atol=1e-5)
    np.testing.assert_allclose(nodes, nr, atol=1e-5)
    np.testing.assert_array_equal(W[0], Wr[0])          # the padding row never moves


def test_zero_rate_changes_nothing_and_empty_contexts_are_skipped():
    tree = HuffmanTree(np.arange(1, V + 1))
    W, nodes = tables(V + 1, tree.num_inner, seed=2)
    before = W.copy(), nodes.copy()
    engine = HogwildWord2Vec(W, nodes, head="hs", cbow=True, tree=tree, threads=1)
    query = np.array([[1, 2], [0, 0]])
    loss, count = engine.train(query, np.array([3, 4]), np.zeros(2, np.float32), alpha=0.0,
                               min_alpha=0.0, seed=0)
    assert count == 1 and loss > 0
    np.testing.assert_array_equal(W, before[0])
    np.testing.assert_array_equal(nodes, before[1])


def test_threads_share_the_tables_and_one_thread_repeats_exactly():
    counts = np.arange(1, 51)
    sampler = UnigramSampler(counts, 0.75)
    rng = np.random.default_rng(0)
    # The first half of the examples queries rows 0..24, the second half rows 25..49:
    # with two threads each half is one thread's share.
    query = np.concatenate([rng.integers(0, 25, 2000), rng.integers(25, 50, 2000)])[:, None]
    item = (query[:, 0] + 1) % 50                  # planted: i -> i + 1
    progress = np.linspace(0, 1, 4000, endpoint=False).astype(np.float32)
    start = rng.normal(0, 0.1, (50, 8)).astype(np.float32)
    finals = {}
    for threads in (1, 1, 2):
        W, out = start.copy(), np.zeros((50, 8), np.float32)
        engine = HogwildWord2Vec(W, out, head="sigmoid", alias_table=sampler.alias_table(),
                                 num_negatives=3, threads=threads)
        passes = [engine.train(query, item, progress, alpha=0.1, min_alpha=0.05, seed=p)
                  for p in range(6)]
        engine.close()
        assert all(n == 4000 for _, n in passes)
        assert passes[-1][0] / 4000 < passes[0][0] / 4000 - 0.5   # it learns the pairs
        assert np.all(np.any(W != start, axis=1))  # every row moved: both shares ran
        if threads in finals:                      # one thread: bitwise repeatable
            np.testing.assert_array_equal(W, finals[threads][0])
            assert passes == finals[threads][1]
        finals[threads] = W, passes


def test_bad_tables_and_settings_are_named():
    W, out = tables(V, V)
    sampler = UnigramSampler(np.ones(V), 0.75)
    kw = dict(alias_table=sampler.alias_table(), num_negatives=2)
    with pytest.raises(ValueError, match="query_table must be a C-contiguous float32"):
        HogwildWord2Vec(W.astype(np.float64), out, head="sigmoid", **kw)
    with pytest.raises(ValueError, match="same width"):
        HogwildWord2Vec(W, out[:, :3].copy(), head="sigmoid", **kw)
    with pytest.raises(ValueError, match="head must be one of"):
        HogwildWord2Vec(W, out, head="softmax", **kw)
    with pytest.raises(ValueError, match="threads must be an int >= 1, got 0"):
        HogwildWord2Vec(W, out, head="sigmoid", threads=0, **kw)
    with pytest.raises(ValueError, match="needs the Huffman tree"):
        HogwildWord2Vec(W, out, head="hs")
    table = sampler.alias_table()
    with pytest.raises(ValueError, match=r"needs alias_table \(an AliasTable"):
        HogwildWord2Vec(W, out, head="sigmoid", alias_table=(table.prob, table.alias),
                        num_negatives=2)
    with pytest.raises(ValueError, match="log_kq must have one entry per id"):
        HogwildWord2Vec(W, out, head="sigmoid", log_kq=np.zeros(3), **kw)
    with pytest.raises(ValueError, match=r"draws ids in \[0, 9\), but output_table has 7"):
        HogwildWord2Vec(W, out, head="sigmoid", alias_table=UniformSampler(9).alias_table(),
                        num_negatives=2)


def test_a_one_hot_table_draws_only_its_id():
    # Every draw of a table whose p puts all mass on id 4: only rows 4 and the positives
    # of the output table move (the draw goes through the table's arrays, nothing else).
    sampler = Fixed(np.eye(V)[4])
    W, out = tables(V, V, seed=3)
    before = out.copy()
    engine = HogwildWord2Vec(W, out, head="sigmoid", alias_table=sampler.alias_table(),
                             num_negatives=K, threads=1)
    engine.train(np.array([[0], [1], [2]]), np.array([1, 1, 2]), np.zeros(3, np.float32),
                 alpha=0.1, min_alpha=0.1, seed=5)
    moved = np.flatnonzero(np.any(out != before, axis=1))
    np.testing.assert_array_equal(moved, [1, 2, 4])


def test_load_kernels_leaves_train_nothing_to_compile():
    from twotower.training.hogwild import hs_examples, load_kernels, sigmoid_examples

    assert load_kernels() >= 0
    assert len(sigmoid_examples.signatures) == 1 and len(hs_examples.signatures) == 1
    counts = np.array([5, 3, 2, 1])
    sampler = UnigramSampler(counts, 0.75)
    W, out = tables(4, 4)
    HogwildWord2Vec(W, out, head="sigmoid", alias_table=sampler.alias_table(),
                    num_negatives=2, threads=1).train(
        np.array([[1], [2]]), np.array([0, 3]), np.zeros(2, np.float32), alpha=0.1,
        min_alpha=0.1, seed=0)
    assert len(sigmoid_examples.signatures) == 1    # the same specialisation was used
