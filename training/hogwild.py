"""word2vec.c's per-example SGD as numba kernels that several threads run at once (Hogwild).

Recht et al., "Hogwild!: A Lock-Free Approach to Parallelizing Stochastic Gradient
Descent" (2011); Mikolov et al. (2013) and word2vec.c's training threads. Each thread
takes its own share of the examples and updates the shared tables in place, without
locks: two threads rarely touch the same row at the same moment, and when they do, one
update is partly lost — which SGD tolerates.

Why not TensorFlow here: a compiled (XLA) TF step holds every variable it uses locked for
the whole launch, so two steps over the same tables run one after the other (measured
on the enwiki extract: 2 threads 0.82–0.84M examples/s, 1 thread 0.80–0.86M, both at
1.6 cores). word2vec's update needs lock-free row updates from several threads at once;
numba's ``nogil`` kernels over numpy arrays give exactly that, at compiled speed.

Every example is applied on its own, in order, as word2vec.c does — so a row that many
examples hit moves by a sequence of small steps, each seeing the row already moved by
the ones before, and no bound on a summed step is needed (training/sgd_trainer.py's batched
engine needs one). Per example i with learning rate lr_i = α − (α − α_min)·p_i (p_i the
fraction of the run done) and query vector u (skip-gram: the centre's row of W; CBOW: the
mean of the context's rows):

  NEG / NCE (label y = 1 for the positive, 0 for each of k draws c from the sampler's
  alias table, unigram^0.75 for word2vec; a draw equal to the positive is skipped, as
  word2vec.c does):
      z_c = u·W'_c  (NCE: − log(k·q(c)))
      g_c = (y − σ(z_c))·lr_i ;  e += g_c·W'_c ;  W'_c += g_c·u
      loss_i = softplus(−z_pos) + Σ_neg softplus(z_c)
  hierarchical softmax (the inner nodes n_j of the item's Huffman path, turns b_j):
      z_j = u·θ_{n_j} ;  g_j = (1 − b_j − σ(z_j))·lr_i ;  e += g_j·θ_{n_j} ;  θ_{n_j} += g_j·u
      loss_i = Σ_j softplus(−(1 − 2 b_j)·z_j)
  then the query side: skip-gram W_q += e; CBOW every context row += e (word2vec.c's and
  gensim's cbow_mean=1 update, ``pooled_sum``) or += e / |context| (the mean's gradient).

The loss is each example's before its update (as the batched engine reports it). The
negatives come from a per-thread linear congruential generator (word2vec.c's: r ← r ·
25214903917 + 11 mod 2⁶⁴) through the sampler's alias table (data/samplers.py
``AliasTable``, from ``Sampler.alias_table()``: any sampler that has one), seeded by the
caller.
"""

import math
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from twotower.data.huffman import HuffmanTree
from twotower.data.samplers import AliasTable

KERNEL_HEADS = ("sigmoid", "hs")

_LCG_A = np.uint64(25214903917)
_LCG_C = np.uint64(11)


@numba.njit(inline="always")
def _next(r):
    return r * _LCG_A + _LCG_C


@numba.njit(inline="always")
def _query_vector(W, query, i, cbow, u):
    """u ← the query of example i (its row for skip-gram, the mean of the non-padding
    context rows for CBOW); returns the context size (1 for skip-gram)."""
    if not cbow:
        u[:] = W[query[i, 0]]
        return 1
    u[:] = 0.0
    size = 0
    for s in range(query.shape[1]):
        row = query[i, s]
        if row == 0:
            continue
        size += 1
        w = W[row]
        for j in range(u.shape[0]):
            u[j] += w[j]
    if size > 0:
        inv = np.float32(1.0 / size)
        for j in range(u.shape[0]):
            u[j] *= inv
    return size


@numba.njit(inline="always")
def _apply_query(W, query, i, cbow, pooled_sum, size, e):
    if not cbow:
        w = W[query[i, 0]]
        for j in range(e.shape[0]):
            w[j] += e[j]
        return
    scale = np.float32(1.0 if pooled_sum else 1.0 / max(size, 1))
    for s in range(query.shape[1]):
        row = query[i, s]
        if row == 0:
            continue
        w = W[row]
        for j in range(e.shape[0]):
            w[j] += scale * e[j]


@numba.njit(inline="always")
def _train_example(out, rows, labels, shifts, m, u, e, z, lr):
    """The output side of one example over its m rows (positive and negatives, or the
    Huffman path); e ← the query's ascent direction. Returns the example's loss.

    All m logits are computed before any row moves, so that the m rows' loads overlap
    (each is a cache miss); word2vec.c computes each just before its own update, which
    differs only for a row that appears twice in the example (a negative drawn twice).
    z is a scratch buffer of at least m logits."""
    d = u.shape[0]
    for t in range(m):
        o = out[rows[t]]
        acc = np.float32(0.0)
        for j in range(d):
            acc += o[j] * u[j]
        z[t] = acc - shifts[t]
    e[:] = 0.0
    loss = 0.0
    one = np.float32(1.0)
    for t in range(m):
        o = out[rows[t]]
        # σ(z) and σ(−z) from one exp, in float32 (the exp and log of every row are most
        # of an HS example's time in double); the loss term softplus((1 − 2y)·z) is
        # −log σ(±z), floored at 1e-30 (a logit past ±69 in the wrong direction).
        a = math.exp(-abs(z[t]))
        big = one / (one + a)            # σ(|z|)
        small = a * big                  # σ(−|z|)
        positive = z[t] >= 0
        s = big if positive else small   # σ(z)
        loss -= math.log(max(big if (labels[t] > 0.5) == positive else small,
                             np.float32(1e-30)))
        g = (labels[t] - s) * lr
        for j in range(d):
            e[j] += g * o[j]
            o[j] += g * u[j]
    return loss


@numba.njit(inline="always")
def _finish_example(W, out, rows, labels, shifts, m, u, e, z, query, i, cbow, pooled_sum,
                    size, alpha, min_alpha, progress):
    """Example i's rate, its output rows' steps and its query's; returns its loss."""
    lr = np.float32(alpha - (alpha - min_alpha) * progress[i])
    loss = _train_example(out, rows, labels, shifts, m, u, e, z, lr)
    _apply_query(W, query, i, cbow, pooled_sum, size, e)
    return loss


@numba.njit(nogil=True, fastmath=True, cache=True)
def sigmoid_examples(W, out, query, item, progress, start, stop, alpha, min_alpha,
                     alias_prob, alias_index, num_negatives, log_kq, use_logq,
                     remove_hits, cbow, pooled_sum, seed):
    """NEG (``use_logq`` False) or NCE (True) over examples start .. stop − 1, in place.

    W [V_q, d] query table, out [V, d] output table, query [n, L] int (skip-gram L = 1;
    CBOW rows + 1 with 0 = padding), item [n], progress [n]. Returns (summed loss,
    examples with a non-empty query)."""
    d = W.shape[1]
    num_items = alias_prob.shape[0]
    u = np.empty(d, np.float32)
    e = np.empty(d, np.float32)
    rows = np.empty(num_negatives + 1, np.int64)
    labels = np.zeros(num_negatives + 1, np.float32)
    labels[0] = 1.0
    shifts = np.zeros(num_negatives + 1, np.float32)
    z = np.empty(num_negatives + 1, np.float32)
    r = np.uint64(seed)
    loss = 0.0
    count = 0
    for i in range(start, stop):
        size = _query_vector(W, query, i, cbow, u)
        if size == 0:
            continue
        target = item[i]
        rows[0] = target
        m = 1
        for _ in range(num_negatives):
            # AliasTable.draw, inline: a nogil numba kernel cannot call back into Python,
            # so it takes the table's two arrays (AliasTable.prob / .alias) and repeats
            # the draw (a column, then a coin: keep it if coin < prob, else its alias)
            # with word2vec.c's generator: the column from r >> 16, a 24-bit coin.
            r = _next(r)
            col = np.int64((r >> np.uint64(16)) % np.uint64(num_items))
            r = _next(r)
            coin = np.float64(r >> np.uint64(40)) * (1.0 / 16777216.0)
            c = col if coin < alias_prob[col] else np.int64(alias_index[col])
            if remove_hits and c == target:
                continue
            rows[m] = c
            m += 1
        if use_logq:
            for t in range(m):
                shifts[t] = log_kq[rows[t]]
        loss += _finish_example(W, out, rows, labels, shifts, m, u, e, z, query, i, cbow,
                                pooled_sum, size, alpha, min_alpha, progress)
        count += 1
    return loss, count


@numba.njit(nogil=True, fastmath=True, cache=True)
def hs_examples(W, nodes, query, item, progress, start, stop, alpha, min_alpha, points,
                codes, lengths, cbow, pooled_sum):
    """Hierarchical softmax over examples start .. stop − 1, in place; nodes [N − 1, d]
    inner-node vectors, points / codes / lengths the Huffman paths (data/huffman.py).
    Returns (summed loss, examples with a non-empty query)."""
    d = W.shape[1]
    u = np.empty(d, np.float32)
    e = np.empty(d, np.float32)
    depth = points.shape[1]
    labels = np.empty(depth, np.float32)
    shifts = np.zeros(depth, np.float32)
    z = np.empty(depth, np.float32)
    loss = 0.0
    count = 0
    for i in range(start, stop):
        size = _query_vector(W, query, i, cbow, u)
        if size == 0:
            continue
        target = item[i]
        m = lengths[target]
        for t in range(m):
            labels[t] = 1.0 - codes[target, t]  # word2vec.c: g = (1 − code − σ(z))·lr
        loss += _finish_example(W, nodes, points[target], labels, shifts, m, u, e, z, query,
                                i, cbow, pooled_sum, size, alpha, min_alpha, progress)
        count += 1
    return loss, count


class HogwildWord2Vec:
    """Runs one of the kernels above over batches of examples with ``threads`` threads.

    Args:
      query_table: float32 [V_q, d] numpy array W, updated in place.
      output_table: float32 [V, d] W' (NEG / NCE) or the HS inner-node vectors θ.
      head: "sigmoid" (NEG / NCE) or "hs".
      cbow: the query is a context of ids + 1 (0 = padding), pooled by its mean.
      pooled_sum: CBOW gives every context row the full e (word2vec.c) instead of e/|S|.
      alias_table, num_negatives: the negatives' AliasTable (``sampler.alias_table()``
        of any twotower Sampler; word2vec's is unigram^0.75) and k (sigmoid head).
      log_kq: [V] log(k·q(c)), subtracted from every logit (NCE); None for NEG.
      remove_accidental_hits: skip a draw equal to the positive (word2vec.c).
      tree: the HS head's HuffmanTree (points, codes, lengths).
      threads: how many threads share each batch.
    """

    def __init__(self, query_table, output_table, *, head, cbow=False, pooled_sum=True,
                 alias_table=None, num_negatives=0, log_kq=None,
                 remove_accidental_hits=True, tree=None, threads=2):
        if head not in KERNEL_HEADS:
            raise ValueError(f"head must be one of {KERNEL_HEADS}, got {head!r}")
        if not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        for name, table in (("query_table", query_table), ("output_table", output_table)):
            if not (isinstance(table, np.ndarray) and table.dtype == np.float32
                    and table.ndim == 2 and table.flags.c_contiguous):
                raise ValueError(f"{name} must be a C-contiguous float32 [rows, d] numpy "
                                 f"array, got {type(table).__name__} "
                                 f"{getattr(table, 'dtype', None)} {np.shape(table)}")
        if query_table.shape[1] != output_table.shape[1]:
            raise ValueError(f"query_table and output_table must have the same width, got "
                             f"{query_table.shape} and {output_table.shape}")
        self.query_table, self.output_table = query_table, output_table
        self.head, self.cbow, self.pooled_sum = head, bool(cbow), bool(pooled_sum)
        self.threads = int(threads)
        self.remove_accidental_hits = bool(remove_accidental_hits)
        if head == "sigmoid":
            if not isinstance(alias_table, AliasTable) or num_negatives < 1:
                raise ValueError("the sigmoid head needs alias_table (an AliasTable: "
                                 "sampler.alias_table()) and num_negatives >= 1, got "
                                 f"alias_table={alias_table!r}, "
                                 f"num_negatives={num_negatives!r}")
            if alias_table.num_items > output_table.shape[0]:  # the kernel does not check
                raise ValueError(f"alias_table draws ids in [0, {alias_table.num_items}), but "
                                 f"output_table has {output_table.shape[0]} rows")
            if log_kq is not None and np.shape(log_kq)[0] != alias_table.num_items:
                raise ValueError(f"log_kq must have one entry per id of the alias table "
                                 f"({alias_table.num_items}), got {np.shape(log_kq)}")
            # the kernel's view of the table: its two arrays (the kernel cannot call
            # AliasTable.draw, see sigmoid_examples)
            self.alias_table = alias_table
            self.alias_prob = np.ascontiguousarray(alias_table.prob, np.float64)
            self.alias_index = np.ascontiguousarray(alias_table.alias, np.int64)
            self.num_negatives = int(num_negatives)
            self.use_logq = log_kq is not None
            self.log_kq = np.ascontiguousarray(
                log_kq if log_kq is not None else np.zeros(1), np.float32)
        else:
            if tree is None:
                raise ValueError("the hs head needs the Huffman tree (tree=)")
            self.points = np.ascontiguousarray(tree.points, np.int64)
            self.codes = np.ascontiguousarray(tree.codes, np.float32)
            self.lengths = np.ascontiguousarray(tree.lengths, np.int64)
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _run(self, query, item, progress, start, stop, alpha, min_alpha, seed):
        if self.head == "sigmoid":
            return sigmoid_examples(
                self.query_table, self.output_table, query, item, progress, start, stop,
                alpha, min_alpha, self.alias_prob, self.alias_index, self.num_negatives,
                self.log_kq, self.use_logq, self.remove_accidental_hits, self.cbow,
                self.pooled_sum, seed)
        return hs_examples(self.query_table, self.output_table, query, item, progress, start,
                           stop, alpha, min_alpha, self.points, self.codes, self.lengths,
                           self.cbow, self.pooled_sum)

    def train(self, query, item, progress, *, alpha, min_alpha, seed):
        """Applies every example of one element (any leading shape: [B] or [S, B] items,
        the query with one more axis for CBOW); returns (summed loss, examples).

        The examples are cut into ``threads`` contiguous shares, one per thread, each
        drawing its negatives from its own generator seeded by (``seed``, share); ``seed``
        is an int or a tuple of ints."""
        # C-contiguous and writable (a read-only view, e.g. of a TF tensor, is another
        # numba type: another compiled specialisation)
        item = np.require(np.asarray(item).reshape(-1), np.int64, ["C", "W"])
        n = item.shape[0]
        query = np.asarray(query)
        query = np.require(query.reshape(n, -1), np.int64, ["C", "W"])
        progress = np.require(np.asarray(progress).reshape(-1), np.float32, ["C", "W"])
        bounds = np.linspace(0, n, self.threads + 1).astype(np.int64)
        entropy = [int(x) for x in (seed if isinstance(seed, (tuple, list)) else [seed])]
        seeds = np.random.SeedSequence(entropy).generate_state(self.threads, np.uint64)
        jobs = [(query, item, progress, int(bounds[t]), int(bounds[t + 1]), float(alpha),
                 float(min_alpha), seeds[t]) for t in range(self.threads)]
        if self._pool is None:
            results = [self._run(*job) for job in jobs]
        else:
            results = list(self._pool.map(lambda job: self._run(*job), jobs))
        return sum(r[0] for r in results), sum(r[1] for r in results)


def load_kernels():
    """Compiles or loads (from numba's on-disk cache) both kernels, once per process, by
    running each on a tiny table; returns the seconds it took. ``train`` does this
    itself on its first call; call it first to keep it out of a timed run (as a compiled
    extension is loaded by its import)."""
    start = time.perf_counter()
    counts = np.arange(1, 5)
    tables = lambda: (np.zeros((4, 2), np.float32), np.zeros((4, 2), np.float32))  # noqa: E731
    probe = (np.ones((1, 1), np.int64), np.zeros(1, np.int64), np.zeros(1, np.float32))
    engines = [HogwildWord2Vec(*tables(), head="sigmoid",
                               alias_table=AliasTable.from_probabilities(counts / 10),
                               num_negatives=1, threads=1),
               HogwildWord2Vec(*tables(), head="hs", tree=HuffmanTree(counts), threads=1)]
    for engine in engines:
        engine.train(*probe, alpha=0.0, min_alpha=0.0, seed=0)
    return time.perf_counter() - start


__all__ = ["HogwildWord2Vec", "sigmoid_examples", "hs_examples", "KERNEL_HEADS", "load_kernels"]
