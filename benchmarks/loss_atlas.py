"""The loss atlas: every head × candidate source beside TFRS at its best, per setting (issue 24).

Settings (``--settings``): the planted logs of data/planted_settings.py — ``drift`` (items
born, peak and fade; trained in time order), ``fresh`` (a share of the catalogue arrives
late, with its features and few training rows; the test holds it), ``skew`` (Zipf
exponent 1.2) — plus ``ml100k`` (MovieLens-100K, leave-last-out, seen items excluded) and
``w2v`` (skip-gram on the enwiki extract: hierarchical softmax vs NEG by the frequency of
the predicted word).

Towers, the same for every model of a setting: query = an L2-normalised user-id
embedding; item = the L2-normalised sum of an item-id embedding and an embedding of the
item's one feature (planted: its cluster; ml100k: its first genre), so an item never
seen in training still has a vector. Models (``MODELS``):

  inbatch            softmax over the batch's positives, no correction
  inbatch_logq       + static logQ (Q = B·p, p from whole-train counts)
  inbatch_stream     + streaming logQ (Yi et al. 2019, data/frequency.py); its α is
                     chosen on validation too (--stream-alphas)
  inbatch_corrected  + corrected logQ (Khrylchenko et al. 2025), static p
  mixed              mixed negatives: batch ∪ K uniform index negatives (Yang et al.
                     2020), logQ with Q = B·p + K/N
  mixed_corrected    + corrected logQ
  sampled            sampled softmax: K shared negatives from unigram^0.75, logQ
  neg                NEG (sigmoid, no logQ) over the same K negatives
  nce                NCE (sigmoid with logQ) over the same K negatives
  triplet            triplet hinge, semi-hard in-batch mining, margin 0.3 on z = s/τ
  hs                 hierarchical softmax on the Huffman tree of the train counts + 1
                     (no item tower: not in ``fresh``, where the feature is the point)
  tfrs_logq          TFRS at its best: tfrs.tasks.Retrieval with
                     candidate_sampling_probability = p(c) (static counts) and
                     remove_accidental_hits=True (benchmarks/movielens_retrieval.py's
                     TFRSReference), on the same towers

Budget: every model gets the same epochs, batch and Adam; τ and lr are chosen for each
model on the validation split (recall@50) from the SAME grid (``--temperatures`` ×
``--lrs``) with seed 0, then every seed trains at the chosen values (seed 0's grid run is
reused). Metrics on the test rows: recall@10, recall@50 (rank of the held-out item among
all N by <u, v>; planted logs repeat items, so nothing is excluded there; ml100k excludes
the user's seen items), tail recall@50 (targets outside the top 20% of items by train
count), fresh recall@50 (targets that are fresh items), mean ± std over seeds, and
examples/s (training, after the first step; indicative only unless run alone).

metrics.json (flat): ``{setting}_{model}_{metric}`` and ``..._std``, each setting's best
twotower model (``{setting}_best`` chosen on validation), ``{setting}_best_recall@50_ratio_vs_tfrs``,
``{setting}_best_beats_tfrs`` (ratio ≥ 1.05 and mean − std > TFRS mean + std), and
``target_beats_tfrs_settings``, the count of settings where that best model wins clearly
(``target_any_beats_tfrs_settings``: where any model does, a choice made on test). On the
planted logs, ``{setting}_oracle_{metric}`` ranks by the generating model's true P(i | u)
(data/planted_settings.py's ``oracle_ranks``): the ceiling any loss could reach with
perfect towers, and ``{setting}_{model}_recall@50_share_of_oracle``. Also results.md
(one table per setting), {setting}.png (recall@50 ± std per model) and w2v.png (median
rank of the held-out context word by frequency bucket).

    python benchmarks/loss_atlas.py --out out/loss_atlas --scale small
"""

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from twotower.artifacts import atomic_directory, atomic_write_json, atomic_write_text, check_output_dir
from twotower.reporting import flatten_metrics, format_table

SETTINGS = ("drift", "fresh", "skew", "ml100k", "w2v")
MODELS = ("inbatch", "inbatch_logq", "inbatch_stream", "inbatch_corrected", "mixed",
          "mixed_corrected", "sampled", "neg", "nce", "triplet", "hs", "tfrs_logq")
PEER = "tfrs_logq"
GOAL_RATIO = 1.05
METRICS = ("recall@10", "recall@50", "tail_recall@50", "fresh_recall@50", "val_recall@50",
           "examples_per_sec")


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one --scale: the planted logs and the training budget shared by all."""
    num_items: int
    num_users: int
    interactions_per_user: int
    cluster_size: int
    epochs: int
    batch_size: int
    num_negatives: int  # K: index negatives (mixed) and sampled negatives
    dim: int
    max_eval_rows: int


SCALES = {
    "small": Scale(num_items=10_000, num_users=5_000, interactions_per_user=20,
                   cluster_size=100, epochs=2, batch_size=512, num_negatives=256, dim=32,
                   max_eval_rows=5_000),
    # the catalogue size (1e5 items) with a log 2 cores train in ~25 s a run:
    # 3.6 training rows an item, most of them in the head, as in a sparse real catalogue
    "medium": Scale(num_items=100_000, num_users=20_000, interactions_per_user=20,
                    cluster_size=1_000, epochs=2, batch_size=1024, num_negatives=512, dim=32,
                    max_eval_rows=10_000),
    "full": Scale(num_items=100_000, num_users=100_000, interactions_per_user=30,
                  cluster_size=1_000, epochs=3, batch_size=1024, num_negatives=1024,
                  dim=64, max_eval_rows=50_000),
}


# ---------------------------------------------------------------- pure functions (tested)

def ranks_of_targets(user_vectors, item_vectors, users, items, *, exclude=None, chunk=1024):
    """0-based rank of each target item among all items by <u, v> (ties count against the
    target: rank = #items scoring strictly higher). ``exclude`` (optional): per row, an
    array of item ids removed from the ranking (never the target itself)."""
    user_vectors = np.asarray(user_vectors, np.float32)
    item_vectors = np.asarray(item_vectors, np.float32)
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    ranks = np.empty(len(users), np.int64)
    for start in range(0, len(users), chunk):
        u = user_vectors[users[start:start + chunk]]
        s = u @ item_vectors.T                                   # [b, N]
        rows = np.arange(len(u))
        target = s[rows, items[start:start + chunk]]
        if exclude is not None:
            for r in rows:
                seen = np.asarray(exclude[start + r], np.int64)
                seen = seen[seen != items[start + r]]
                s[r, seen] = -np.inf
        ranks[start:start + chunk] = (s > target[:, None]).sum(axis=1)
    return ranks


def rank_metrics(ranks, targets, item_counts, fresh=None):
    """recall@10/@50 of the ranks; tail recall@50 over targets outside the top 20% of
    items by ``item_counts``; fresh recall@50 over targets with ``fresh`` (NaN if none)."""
    ranks, targets = np.asarray(ranks), np.asarray(targets)
    n = len(item_counts)
    head = np.zeros(n, bool)
    head[np.argsort(-np.asarray(item_counts), kind="stable")[:max(1, n // 5)]] = True
    out = {"recall@10": float(np.mean(ranks < 10)), "recall@50": float(np.mean(ranks < 50))}
    tail = ~head[targets]
    out["tail_recall@50"] = float(np.mean(ranks[tail] < 50)) if tail.any() else float("nan")
    if fresh is not None and np.asarray(fresh)[targets].any():
        sel = np.asarray(fresh)[targets]
        out["fresh_recall@50"] = float(np.mean(ranks[sel] < 50))
    else:
        out["fresh_recall@50"] = float("nan")
    return out


def summarize(setting, runs):
    """model -> list of metric dicts → flat {setting_model_metric: mean, ..._std: std}."""
    flat = {}
    for model, results in runs.items():
        for key in METRICS:
            vals = np.asarray([r.get(key, np.nan) for r in results], np.float64)
            if np.isnan(vals).all():
                continue
            flat[f"{setting}_{model}_{key}"] = float(np.nanmean(vals))
            if len(vals) > 1:
                flat[f"{setting}_{model}_{key}_std"] = float(np.nanstd(vals, ddof=1))
        flat[f"{setting}_{model}_runs"] = len(results)
    return flat


def beats_peer(flat, setting, model, peer=PEER, key="recall@50", ratio=GOAL_RATIO):
    """(ratio of means, clear win): the win needs mean ≥ ratio × the peer's mean AND
    mean − std > the peer's mean + std (std 0 where a model has one run)."""
    ours, theirs = flat[f"{setting}_{model}_{key}"], flat[f"{setting}_{peer}_{key}"]
    r = ours / theirs if theirs > 0 else float("inf")
    apart = (ours - flat.get(f"{setting}_{model}_{key}_std", 0.0)
             > theirs + flat.get(f"{setting}_{peer}_{key}_std", 0.0))
    return r, bool(r >= ratio and apart)


# ---------------------------------------------------------------- data

@dataclasses.dataclass
class Task:
    """A setting's data as arrays: train (in training order), valid, test rows; the item
    feature [N]; fresh [N]; per-row exclusions for evaluation (ml100k) or None; ``oracle``:
    the test metrics of ranking by the true P(i | u) (planted logs only), the ceiling."""
    name: str
    num_users: int
    num_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    valid_users: np.ndarray
    valid_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    item_feature: np.ndarray
    fresh: np.ndarray
    shuffle: bool
    valid_exclude: list = None
    test_exclude: list = None
    oracle: dict = None  # test metrics of the generating model's own ranking (planted logs)

    @property
    def item_counts(self):
        return np.bincount(self.train_items, minlength=self.num_items)


def _cap(n, seed, *columns):
    """The same ≤ n rows (a seeded draw, in order) of each column; None stays None."""
    if len(columns[0]) <= n:
        return columns
    sel = np.sort(np.random.default_rng(seed).choice(len(columns[0]), n, replace=False))
    return tuple(None if c is None else c[sel] for c in columns)


def planted_task(setting, scale, seed=0):
    """The planted log of ``setting`` at ``scale`` as a Task (data seed ``seed``: the same
    log for every model and training seed)."""
    from twotower.data import planted_settings as ps

    log = ps.SETTINGS[setting](num_items=scale.num_items, num_users=scale.num_users,
                               interactions_per_user=scale.interactions_per_user,
                               cluster_size=scale.cluster_size, seed=seed)
    vu, vi = _cap(scale.max_eval_rows, 1, log.valid_users, log.valid_items)
    tu, ti, tt = _cap(scale.max_eval_rows, 2, log.test_users, log.test_items, log.test_times)
    task = Task(setting, log.num_users, log.num_items, log.train_users, log.train_items,
                vu, vi, tu, ti, log.item_cluster, log.fresh, shuffle=setting != "drift")
    task.oracle = rank_metrics(ps.oracle_ranks(log, tu, ti, tt), ti, task.item_counts,
                               task.fresh)
    return task


def ml100k_task():
    """MovieLens-100K, leave-last-out (the movielens benchmark's split); the item feature
    is the first genre; the user's earlier items are excluded at evaluation."""
    from twotower.recipes import two_tower_kit as common
    from twotower.recipes import youtube

    d = common.load_data(youtube.Config())
    genres = np.asarray(d.items["genres"])[:, 0]
    _, feature = np.unique(genres, return_inverse=True)
    seen_valid = [np.asarray(d.seen_train[u]) for u in d.valid.user]
    seen_test = [np.concatenate([np.asarray(d.seen_train[u]), np.asarray(d.seen_valid[u])])
                 for u in d.test.user]
    return Task("ml100k", len(d.users["user_id"]), d.num_items,
                np.asarray(d.train.user, np.int64), np.asarray(d.train.item, np.int64),
                np.asarray(d.valid.user, np.int64), np.asarray(d.valid.item, np.int64),
                np.asarray(d.test.user, np.int64), np.asarray(d.test.item, np.int64),
                feature.astype(np.int64), np.zeros(d.num_items, bool), shuffle=True,
                valid_exclude=seen_valid, test_exclude=seen_test)


# ---------------------------------------------------------------- towers and models

class UserTower(tf.keras.layers.Layer):
    """u = W[user] / ‖W[user]‖."""

    def __init__(self, num_users, dim, **kwargs):
        super().__init__(**kwargs)
        from twotower.towers import IDTower
        self.ids = IDTower(num_users, dim)

    def call(self, users):
        return tf.math.l2_normalize(self.ids(users), axis=-1)


class ItemTower(tf.keras.layers.Layer):
    """v = (E[id] + F[feature]) / ‖·‖: an unseen item still has its feature's vector."""

    def __init__(self, num_items, num_features, dim, **kwargs):
        super().__init__(**kwargs)
        from twotower.towers import IDTower
        self.ids = IDTower(num_items, dim)
        self.features = IDTower(num_features, dim)

    def call(self, item):
        return tf.math.l2_normalize(self.ids(item["item_id"]) + self.features(item["feature"]),
                                    axis=-1)


def applies(model, task):
    """Whether ``model`` runs on ``task``: hierarchical softmax has no item tower to place
    a fresh item with (its tree is built on train counts + 1, so an item with no
    training rows is a deep leaf)."""
    if model == "hs":
        return not task.fresh.any()
    return True


def build_loss(model, task, temperature, num_negatives, dim, seed, alpha=0.01):
    """The RetrievalLoss of ``model`` (module docstring) for ``task``; ``alpha`` is the
    streaming estimator's α (inbatch_stream only)."""
    from twotower.data.frequency import StreamingFrequencyEstimator
    from twotower.data.samplers import UnigramSampler
    from twotower.losses import (HierarchicalSoftmax, InBatch, MixedNegatives, NCE,
                                 NegativeSampling, RetrievalLoss, SampledNegatives, Triplet)

    counts = task.item_counts
    N = task.num_items
    kw = dict(temperature=temperature)
    if model == "inbatch":
        return RetrievalLoss("softmax", InBatch(), logq=False, **kw)
    if model == "inbatch_logq":
        return RetrievalLoss("softmax", InBatch(frequencies=counts), **kw)
    if model == "inbatch_stream":
        est = StreamingFrequencyEstimator(num_buckets=N, alpha=alpha)
        return RetrievalLoss("softmax", InBatch(frequencies=est), **kw)
    if model == "inbatch_corrected":
        return RetrievalLoss("softmax", InBatch(frequencies=counts), logq="corrected", **kw)
    if model in ("mixed", "mixed_corrected"):
        source = MixedNegatives(min(num_negatives, N), N, frequencies=counts)
        return RetrievalLoss("softmax", source,
                             logq="corrected" if model == "mixed_corrected" else None, **kw)
    if model in ("sampled", "neg", "nce"):
        sampler = UnigramSampler(counts, power=0.75, seed=seed)
        head = {"sampled": "softmax", "neg": NegativeSampling(), "nce": NCE()}[model]
        return RetrievalLoss(head, SampledNegatives(sampler, num_negatives), **kw)
    if model == "triplet":
        return RetrievalLoss(Triplet(margin=0.3, mining="semi-hard"), InBatch(), logq=False, **kw)
    if model == "hs":
        return RetrievalLoss(HierarchicalSoftmax(counts + 1, dim), candidates=None)
    raise ValueError(f"unknown model {model!r}; known: {MODELS}")


def _dataset(task, batch_size, seed):
    feats = task.item_feature[task.train_items]
    ds = tf.data.Dataset.from_tensor_slices(
        {"query": task.train_users, "item": {"item_id": task.train_items, "feature": feats}})
    if task.shuffle:
        ds = ds.shuffle(len(task.train_items), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _item_table(task):
    return {"item_id": np.arange(task.num_items, dtype=np.int64),
            "feature": task.item_feature.astype(np.int64)}


def _user_vectors(query_tower, task):
    return query_tower(np.arange(task.num_users, dtype=np.int64)).numpy()


def hs_log_probabilities(user_vectors, node_vectors, points, codes, lengths):
    """log P(leaf | u) of hierarchical softmax for every leaf: [B, N], in numpy.

    log P(w | u) = Σ_{j < L_w} log σ((1 − 2·b_j)·<u, θ_{p_j}>) (losses/hierarchical_softmax.py),
    computed top-down: the log-probability of reaching each inner node is its parent's
    plus the log σ of the turn into it, one tree level at a time; a leaf adds its last
    turn. Work ~2N per query, not Σ_w L_w (a Huffman tree of skewed counts is deep)."""
    u = np.asarray(user_vectors, np.float32)
    s = u @ np.asarray(node_vectors, np.float32).T                    # [B, N − 1]
    points, codes = np.asarray(points, np.int64), np.asarray(codes, np.float32)
    lengths = np.asarray(lengths, np.int64)
    B, N = len(u), len(lengths)
    out = np.zeros((B, N), np.float32)
    if N == 1 or s.shape[1] == 0:
        return out
    depth = np.full(s.shape[1], -1, np.int64)
    parent = np.zeros(s.shape[1], np.int64)
    turn = np.zeros(s.shape[1], np.float32)
    for j in range(points.shape[1] - 1):                                # inner edges
        has = lengths > j + 1
        child = points[has, j + 1]
        depth[child] = j + 1
        parent[child] = points[has, j]
        turn[child] = 1.0 - 2.0 * codes[has, j]
    depth[points[:, 0]] = 0                                             # the root
    reach = np.zeros_like(s)
    for d in range(1, depth.max() + 1):
        nodes = np.flatnonzero(depth == d)
        p = parent[nodes]
        reach[:, nodes] = reach[:, p] - np.logaddexp(0.0, -turn[nodes] * s[:, p])
    last = points[np.arange(N), lengths - 1]
    sign = 1.0 - 2.0 * codes[np.arange(N), lengths - 1]
    return reach[:, last] - np.logaddexp(0.0, -sign * s[:, last])


def _hs_ranks(head, user_vectors, users, items, chunk=64):
    tree, theta = head.tree, head.node_vectors.numpy()
    ranks = np.empty(len(users), np.int64)
    for start in range(0, len(users), chunk):
        lp = hs_log_probabilities(user_vectors[users[start:start + chunk]], theta,
                                  tree.points, tree.codes, tree.lengths)
        t = lp[np.arange(len(lp)), items[start:start + chunk]]
        ranks[start:start + chunk] = (lp > t[:, None]).sum(axis=1)
    return ranks


def train_and_evaluate(model, task, scale, temperature, lr, seed, alpha=0.01):
    """Trains ``model`` on ``task`` with (τ, lr, seed; α for inbatch_stream); returns its
    test and validation metrics and examples/s."""
    from twotower.towers import TwoTowerModel
    from twotower.training import resumable_fit

    tf.keras.utils.set_random_seed(seed)
    q = UserTower(task.num_users, scale.dim)
    i = ItemTower(task.num_items, int(task.item_feature.max()) + 1, scale.dim)
    meter = resumable_fit.Throughput(scale.batch_size, len(task.train_items), scale.epochs)
    if model == PEER:
        TFRSReference = _tfrs_reference()
        counts = task.item_counts.astype(np.float64)
        net = TFRSReference(q, i, temperature, sampling_probability=counts / counts.sum())
    else:
        loss = build_loss(model, task, temperature, scale.num_negatives, scale.dim, seed,
                          alpha=alpha)
        net = TwoTowerModel(q, i, loss, item_features=_item_table(task))
    net.compile(optimizer=tf.keras.optimizers.Adam(lr))
    net.fit(_dataset(task, scale.batch_size, seed), epochs=scale.epochs, verbose=0,
            callbacks=[meter])
    U = _user_vectors(q, task)
    out = {"examples_per_sec": meter.examples_per_sec}
    counts = task.item_counts
    if model == "hs":
        head = net.retrieval_loss.head
        val = _hs_ranks(head, U, task.valid_users, task.valid_items)
        test = _hs_ranks(head, U, task.test_users, task.test_items)
    else:
        V = i(_item_table(task)).numpy()
        val = ranks_of_targets(U, V, task.valid_users, task.valid_items,
                               exclude=task.valid_exclude)
        test = ranks_of_targets(U, V, task.test_users, task.test_items,
                                exclude=task.test_exclude)
    out.update(rank_metrics(test, task.test_items, counts, task.fresh))
    out["val_recall@50"] = float(np.mean(val < 50))
    return out


def _tfrs_reference():
    """TFRSReference from benchmarks/movielens_retrieval.py (TFRS at its best)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    from movielens_retrieval import TFRSReference
    return TFRSReference


# ---------------------------------------------------------------- word2vec: HS vs NEG

def w2v_setting(args):
    """Skip-gram HS vs NEG on the enwiki extract (or --w2v-corpus): train on all but the
    last 10% of sentences; on skip-gram pairs of the held-out 10% (window 2, up to
    --w2v-eval-pairs), rank the context word among the whole vocabulary by the model's
    score of it given the centre word (HS: log P from the Huffman path; NEG:
    <syn0[w], syn1neg[c]>, read out twice: as is, which ranks by PMI, and + log q(c), which
    ranks by P(c | w)) and report recall@10/@50 and the median rank per frequency bucket of
    the context word (head: the most frequent words making 50% of the tokens, mid: the
    next 40%, rare: the last 10%). Returns readout -> list of metric dicts (one a seed)."""
    from twotower.data.text_corpus import load_corpus
    from twotower.training.word2vec_trainer import (DataConfig, ModelConfig, TrainConfig,
                                                    train_word2vec)

    sentences = load_corpus(args.w2v_corpus)
    cut = int(len(sentences) * 0.9)
    train, held = sentences[:cut], sentences[cut:]
    runs = {}
    for head in ("neg", "hs"):
        for seed in range(args.seeds):
            vocab, model, stats = train_word2vec(
                train, DataConfig(corpus="(loss atlas)", min_count=5),
                ModelConfig(arch="sg", head=head, dim=100, window=5),
                TrainConfig(epochs=args.w2v_epochs, seed=seed), progress=False)
            for name, m in _w2v_eval(vocab, model, stats, head, held, args).items():
                runs.setdefault(name, []).append(m)
    return runs


def _w2v_eval(vocab, model, stats, head, held, args):
    index = vocab.index
    counts = np.asarray(vocab.counts, np.float64)
    order = np.argsort(-counts, kind="stable")
    share = np.cumsum(counts[order]) / counts.sum()
    bucket = np.empty(len(counts), np.int64)
    bucket[order] = np.where(share <= 0.5, 0, np.where(share <= 0.9, 1, 2))
    rng = np.random.default_rng(0)
    centres, contexts = [], []
    for sent in held:
        ids = [index[w] for w in sent if w in index]
        for p, w in enumerate(ids):
            for q in range(max(0, p - 2), min(len(ids), p + 3)):
                if q != p:
                    centres.append(w)
                    contexts.append(ids[q])
    centres, contexts = np.asarray(centres), np.asarray(contexts)
    if len(centres) > args.w2v_eval_pairs:
        sel = rng.choice(len(centres), args.w2v_eval_pairs, replace=False)
        centres, contexts = centres[sel], contexts[sel]
    syn0 = model.query_tower.embeddings.numpy()
    if head == "hs":
        readouts = {"hs": _hs_ranks(model.retrieval_loss.head, syn0, centres, contexts)}
    else:
        syn1 = model.item_tower.embeddings.numpy()
        # NEG's optimum is <w, c> = PMI(w, c) − log k under its noise q = unigram^0.75
        # (Levy & Goldberg 2014): <w, c> ranks by PMI; <w, c> + log q(c) by P(c | w)
        q = counts ** 0.75
        log_q = np.log(q / q.sum()).astype(np.float32)
        ones = np.ones((len(syn0), 1), np.float32)
        readouts = {"neg": ranks_of_targets(syn0, syn1, centres, contexts),
                    "neg_logq": ranks_of_targets(np.hstack([syn0, ones]),
                                                 np.hstack([syn1, log_q[:, None]]),
                                                 centres, contexts)}
    out = {}
    for name, ranks in readouts.items():
        m = {"recall@10": float(np.mean(ranks < 10)), "recall@50": float(np.mean(ranks < 50)),
             "median_rank": float(np.median(ranks)),
             "words_per_sec": float(stats["words_per_sec"])}
        for b, bname in enumerate(("head", "mid", "rare")):
            sel = bucket[contexts] == b
            if sel.any():
                m[f"{bname}_recall@50"] = float(np.mean(ranks[sel] < 50))
                m[f"{bname}_median_rank"] = float(np.median(ranks[sel]))
                m[f"{bname}_pairs"] = int(sel.sum())
        out[name] = m
    return out


# ---------------------------------------------------------------- running

def model_grid(model, args):
    """The (τ, lr, α) settings tried for ``model`` on validation: the shared τ × lr grid
    for every model; × the --stream-alphas for inbatch_stream (the estimator's α, which
    must suit the log's length: ~1/α occurrences of an item to converge); HS has no τ."""
    temps = args.temperatures[:1] if model == "hs" else args.temperatures
    alphas = args.stream_alphas if model == "inbatch_stream" else [None]
    return [(t, lr, a) for t in temps for lr in args.lrs for a in alphas]


def run_setting(task, scale, args, log):
    """Grid on seed 0 (validation recall@50), then the other seeds at the chosen values."""
    models = [m for m in args.models if applies(m, task)]
    runs, chosen = {}, {}
    for model in models:
        best = None
        for t, lr, a in model_grid(model, args):
            started = time.time()
            m = train_and_evaluate(model, task, scale, t, lr, seed=0, alpha=a or 0.01)
            what = f"τ={t:g} lr={lr:g}" + (f" α={a:g}" if a else "")
            log(f"{task.name} {model} {what} seed 0: val@50 {m['val_recall@50']:.4f} "
                f"test@50 {m['recall@50']:.4f} ({time.time() - started:.0f} s)")
            tf.keras.backend.clear_session()
            if best is None or m["val_recall@50"] > best[3]["val_recall@50"]:
                best = (t, lr, a, m)
        t, lr, a, m0 = best
        chosen[model] = (t, lr, a)
        runs[model] = [m0]
        for seed in range(1, args.seeds):
            m = train_and_evaluate(model, task, scale, t, lr, seed=seed, alpha=a or 0.01)
            log(f"{task.name} {model} τ={t:g} lr={lr:g} seed {seed}: test@50 {m['recall@50']:.4f}")
            tf.keras.backend.clear_session()
            runs[model].append(m)
    return runs, chosen


def setting_summary(name, runs, chosen, oracle=None):
    """The flat metrics of one setting, its best twotower model (on validation) and the
    comparison with TFRS; ``oracle`` (test metrics of the true model) as
    ``{name}_oracle_{metric}`` and each model's recall@50 as a share of it."""
    flat = summarize(name, runs)
    if oracle:
        for key, value in oracle.items():
            if np.isfinite(value):
                flat[f"{name}_oracle_{key}"] = value
        for model in runs:
            if flat.get(f"{name}_oracle_recall@50", 0) > 0:
                flat[f"{name}_{model}_recall@50_share_of_oracle"] = (
                    flat[f"{name}_{model}_recall@50"] / flat[f"{name}_oracle_recall@50"])
    for model, (t, lr, a) in chosen.items():
        if model != "hs":  # HS has no temperature
            flat[f"{name}_{model}_temperature"] = t
        flat[f"{name}_{model}_lr"] = lr
        if a is not None:
            flat[f"{name}_{model}_alpha"] = a
    ours = [m for m in runs if m != PEER]
    best = None
    if ours:
        best = max(ours, key=lambda m: flat.get(f"{name}_{m}_val_recall@50", -1))
        flat[f"{name}_best_recall@50"] = flat[f"{name}_{best}_recall@50"]
    if best and PEER in runs:
        win = []
        for m in ours:  # the goal counts any twotower model; "best" is the honest pick
            r, clear = beats_peer(flat, name, m)
            flat[f"{name}_{m}_recall@50_ratio_vs_tfrs"] = r
            if clear:
                win.append(m)
        r, clear = beats_peer(flat, name, best)
        flat[f"{name}_best_recall@50_ratio_vs_tfrs"] = r
        flat[f"{name}_best_beats_tfrs"] = int(clear)
        flat[f"{name}_beats_tfrs"] = int(bool(win))
        flat[f"{name}_models_beating_tfrs"] = len(win)
    return flat, best


def table(name, runs, flat):
    rows = []
    for model in runs:
        alpha = flat.get(f"{name}_{model}_alpha")
        row = {"model": model if alpha is None else f"{model} (α {alpha:g})",
               "τ / lr": (f"{flat.get(f'{name}_{model}_temperature', '-')} / "
                          f"{flat.get(f'{name}_{model}_lr', '-')}")}
        for key in ("recall@10", "recall@50", "tail_recall@50", "fresh_recall@50",
                    "val_recall@50", "examples_per_sec"):
            mean = flat.get(f"{name}_{model}_{key}")
            std = flat.get(f"{name}_{model}_{key}_std")
            fmt = "{:.0f}" if key == "examples_per_sec" else "{:.4f}"
            row[key] = "-" if mean is None else (
                fmt.format(mean) + (f" ± {fmt.format(std)}" if std is not None else ""))
        ratio = flat.get(f"{name}_{model}_recall@50_ratio_vs_tfrs")
        row["@50 vs tfrs"] = "-" if ratio is None else f"{ratio:.3f}"
        share = flat.get(f"{name}_{model}_recall@50_share_of_oracle")
        if share is not None:
            row["@50 / oracle"] = f"{share:.3f}"
        rows.append(row)
    if f"{name}_oracle_recall@50" in flat:  # the generating model ranks: the ceiling
        row = {"model": "oracle (true model)", "τ / lr": "-"}
        for key in ("recall@10", "recall@50", "tail_recall@50", "fresh_recall@50"):
            value = flat.get(f"{name}_oracle_{key}")
            row[key] = "-" if value is None else f"{value:.4f}"
        row.update({"val_recall@50": "-", "examples_per_sec": "-", "@50 vs tfrs": "-",
                    "@50 / oracle": "1.000"})
        rows.append(row)
    return format_table(rows)


def plot_setting(path, name, runs, flat):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(runs)
    means = [flat.get(f"{name}_{m}_recall@50", np.nan) for m in models]
    stds = [flat.get(f"{name}_{m}_recall@50_std", 0.0) for m in models]
    colors = ["tab:red" if m == PEER else "tab:blue" for m in models]
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    ax.bar(range(len(models)), means, yerr=stds, color=colors, capsize=3)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=45, ha="right")
    oracle = flat.get(f"{name}_oracle_recall@50")
    if oracle is not None:
        ax.axhline(oracle, color="black", linestyle="--", linewidth=1,
                   label="oracle: ranking by the true P(i | u)")
        top = np.nanmax(np.asarray(means, np.float64) + np.asarray(stds, np.float64))
        ax.set_ylim(0, 1.25 * max(oracle, top))  # room for the legend above the line
        ax.legend(loc="upper right")
    ax.set_ylabel("test recall@50 (mean ± std over seeds)")
    ax.set_title(f"loss atlas: {name} (red: TFRS at its best)")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_w2v(path, flat):
    """Median rank of the held-out context word by its frequency bucket, per readout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = ("head", "mid", "rare")
    readouts = [(h, label) for h, label in (("neg", "NEG <w, c>"), ("neg_logq", "NEG <w, c> + log q"),
                                             ("hs", "HS"))
                if f"w2v_{h}_head_median_rank" in flat]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    width = 0.8 / max(1, len(readouts))
    for r, (h, label) in enumerate(readouts):
        xs = [b + (r - (len(readouts) - 1) / 2) * width for b in range(len(buckets))]
        ax.bar(xs, [flat.get(f"w2v_{h}_{b}_median_rank", np.nan) for b in buckets],
               width=width, label=label)
    ax.set_xticks(range(len(buckets)))
    ax.set_xticklabels([f"{b} words" for b in buckets])
    ax.set_yscale("log")
    ax.set_ylabel("median rank of the held-out context (lower is better)")
    ax.set_title("loss atlas: w2v, skip-gram HS vs NEG by word frequency")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def w2v_summary(runs):
    flat = {}
    for head, results in runs.items():
        for key in sorted({k for r in results for k in r}):
            vals = np.asarray([r[key] for r in results if key in r], np.float64)
            flat[f"w2v_{head}_{key}"] = float(np.mean(vals))
            if len(vals) > 1 and not key.endswith("_pairs"):
                flat[f"w2v_{head}_{key}_std"] = float(np.std(vals, ddof=1))
    return flat


def w2v_table(flat):
    rows = []
    for head, label in (("neg", "NEG (<w, c>)"), ("neg_logq", "NEG (<w, c> + log q)"),
                        ("hs", "HS")):
        row = {"model": label}
        for key in ("recall@10", "recall@50", "median_rank", "head_recall@50",
                    "mid_recall@50", "rare_recall@50", "head_median_rank",
                    "mid_median_rank", "rare_median_rank", "words_per_sec"):
            mean = flat.get(f"w2v_{head}_{key}")
            std = flat.get(f"w2v_{head}_{key}_std")
            fmt = "{:.0f}" if key.endswith(("words_per_sec", "rank")) else "{:.4f}"
            row[key] = "-" if mean is None else (
                fmt.format(mean) + (f" ± {fmt.format(std)}" if std is not None else ""))
        rows.append(row)
    return format_table(rows)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (metrics.json, results.md, "
                   "one PNG per setting)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out")
    p.add_argument("--settings", default="drift,fresh,skew,ml100k,w2v",
                   help=f"comma-separated settings, of {','.join(SETTINGS)}")
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated models (default: all; see the module docstring)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per model (>= 2 "
                   "for a spread)")
    p.add_argument("--scale", default="small", choices=sorted(SCALES),
                   help="small: 1e4 items, 2 epochs (about 30 min on 2 cores); medium: 1e5 items, "
                   "20k users x 20 rows (about 26 min a planted setting); full: 1e5 items, "
                   "1e5 users x 30 rows (about 12 h a planted setting)")
    p.add_argument("--temperatures", default="0.1,0.3",
                   help="τ grid, the same for every model (chosen on validation)")
    p.add_argument("--lrs", default="0.01", help="Adam lr grid, the same for every model")
    p.add_argument("--stream-alphas", default="0.01,0.3",
                   help="α grid of inbatch_stream's streaming estimator (chosen on "
                   "validation with τ and lr)")
    p.add_argument("--w2v-corpus", default="enwiki-sample",
                   help="corpus of the w2v setting ('text8', 'enwiki-sample' or a file)")
    p.add_argument("--w2v-epochs", type=int, default=5, help="epochs of the w2v setting")
    p.add_argument("--w2v-eval-pairs", type=int, default=20_000,
                   help="held-out skip-gram pairs ranked in the w2v setting")
    return p


def _floats(text, flag):
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated numbers, got {text!r}") from None
    if not vals or any(not (v > 0 and np.isfinite(v)) for v in vals):
        raise ValueError(f"{flag} must hold numbers > 0, got {text!r}")
    return vals


def parse_args(argv=None):
    """Parsed and checked arguments; a bad value raises ValueError naming the flag."""
    args = build_parser().parse_args(argv)
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    bad = sorted(set(args.settings) - set(SETTINGS))
    if bad or not args.settings:
        raise ValueError(f"--settings names unknown settings {bad}; known: {','.join(SETTINGS)}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = sorted(set(args.models) - set(MODELS))
    if bad or not args.models:
        raise ValueError(f"--models names unknown models {bad}; known: {','.join(MODELS)}")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.w2v_epochs < 1 or args.w2v_eval_pairs < 1:
        raise ValueError("--w2v-epochs and --w2v-eval-pairs must be >= 1")
    args.temperatures = _floats(args.temperatures, "--temperatures")
    args.lrs = _floats(args.lrs, "--lrs")
    args.stream_alphas = _floats(args.stream_alphas, "--stream-alphas")
    if any(a > 1 for a in args.stream_alphas):
        raise ValueError(f"--stream-alphas must be in (0, 1], got {args.stream_alphas}")
    return args


def main(argv=None):
    try:
        args = parse_args(argv)
        check_output_dir(args.out, overwrite=args.overwrite)
    except ValueError as e:  # OutputPathError is one too
        print(f"loss_atlas: error: {e}", file=sys.stderr)
        return 2
    scale = SCALES[args.scale]
    started = time.time()

    def log(msg):
        print(f"[{time.time() - started:6.0f} s] {msg}", flush=True)

    flat, tables, all_runs, bests = {}, [], {}, {}
    for name in args.settings:
        if name == "w2v":
            runs = w2v_setting(args)
            flat.update(w2v_summary(runs))
            tables.append(("w2v", f"## w2v (skip-gram, {args.w2v_corpus}, {args.w2v_epochs} "
                           f"epochs, {args.seeds} seeds): held-out context recall by the "
                           f"frequency of the predicted word\n\n{w2v_table(flat)}"))
            log(f"w2v done: {w2v_table(flat)}")
            continue
        task = ml100k_task() if name == "ml100k" else planted_task(name, scale)
        runs, chosen = run_setting(task, scale, args, log)
        f, best = setting_summary(name, runs, chosen, task.oracle)
        flat.update(f)
        all_runs[name] = runs
        if best:
            bests[f"{name}_best"] = best
        header = (f"## {name} ({task.num_items} items, {task.num_users} users, "
                  f"{len(task.train_items)} train rows, {len(task.test_items)} test rows); "
                  f"{args.seeds} seeds, {scale.epochs} epochs, batch {scale.batch_size}, "
                  f"K {scale.num_negatives}; best on validation: {best}")
        tables.append((name, f"{header}\n\n{table(name, runs, f)}"))
        log(f"{header}\n{table(name, runs, f)}")
    # the goal counts the best twotower model of each setting, chosen on validation;
    # target_any_beats_tfrs_settings counts settings where any model wins on test (a
    # choice made on test: optimistic, reported beside it)
    flat["target_beats_tfrs_settings"] = sum(
        int(flat.get(f"{s}_best_beats_tfrs", 0)) for s in args.settings)
    flat["target_any_beats_tfrs_settings"] = sum(
        int(flat.get(f"{s}_beats_tfrs", 0)) for s in args.settings)
    flat.update(seeds=args.seeds, epochs=scale.epochs, batch_size=scale.batch_size,
                num_negatives=scale.num_negatives, dim=scale.dim,
                wall_seconds=time.time() - started)
    note = (f"scale {args.scale}; τ grid {args.temperatures}, lr grid {args.lrs} (the same "
            "for every model, chosen on validation recall@50 with seed 0); examples/s are "
            "indicative only (not run alone on the machine)")
    text = "# Loss atlas\n\n" + note + "\n\n" + "\n\n".join(t for _, t in tables) + "\n"
    print(text)
    print(f"target_beats_tfrs_settings: {flat['target_beats_tfrs_settings']}")
    with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
        named = flatten_metrics(flat)
        named.update(bests)  # the best model's name per setting (chosen on validation)
        atomic_write_json(os.path.join(tmp, "metrics.json"), named)
        atomic_write_text(os.path.join(tmp, "results.md"), text)
        for name, runs in all_runs.items():
            plot_setting(os.path.join(tmp, f"{name}.png"), name, runs, flat)
        if "w2v" in args.settings:
            plot_w2v(os.path.join(tmp, "w2v.png"), flat)
    print(f"wrote {os.path.join(args.out, 'metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
