"""The serving side of a trained retrieval model: the catalogue embedded by the item tower,
a ScaNN index tuned against brute force, and a Retriever that answers every user as the
whole log leaves them; written as the folder ``twotower serve`` takes and as one
SavedModel.

    export = export_retriever(model, data)        # index + towers + user table + seen items
    write_serving(folder, export, model)          # folder/index, folder/saved_model
"""

import dataclasses
import os
import sys
import warnings

import numpy as np

from twotower.data.retrieval_task import item_inputs, query_inputs

INDEX_KS = (1, 5, 10, 20, 50, 100)


@dataclasses.dataclass
class ServingExport:
    """What :func:`export_retriever` built.

    Attributes:
      retriever: the Retriever (index + towers + user feature table + seen items).
      index: its tuned ScannIndex.
      tuned: the tuner's TuneResult (recall@10 vs brute force, queries/s, knobs).
      user_ids: the user table's user ids (internal), one per row.
      item_ids: the index's id of every item row (MovieLens movie ids, or the internal
        row numbers when the data carries an item vocabulary).
      item_keys: the ids the Retriever answers with, per item row (``item_vocab`` when
        there is one, else ``item_ids``).
      query_example, item_example: two-row input batches (the towers' signatures).
    """

    retriever: object
    index: object
    tuned: object
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_keys: np.ndarray
    query_example: dict
    item_example: dict


TUNE_QUERIES = 5_000


def export_retriever(model, data, *, target_recall=0.95, k=10, progress=True):
    """The serving side of a trained MovieLens model.

    1. the catalog embedded by the item tower and a ScaNN index over it (size rules of
       index/config.py; cosine when the towers L2-normalise, else dot);
    2. tuned (leaves to search, reorder) to ``target_recall`` recall@``k`` against brute
       force on the test users' query embeddings (a uniform sample of
       :data:`TUNE_QUERIES` of them when there are more);
    3. a Retriever with the user feature store — each user as the whole log leaves them
       (``data.serving``: history up to and including the last interaction, held-out
       items too) — every known user's query vector computed from it once (u2i by user
       id then runs no tower), and every item of the user's log, excluded from u2i
       answers. The towers are not refit on the held-out rows: they are the ones the
       metrics measure.

    When the data carries external id vocabularies (``data.item_vocab`` /
    ``data.user_vocab``, 1-D arrays, position = internal id), the index holds internal
    rows and the Retriever gets them as ``item_vocab=`` / ``user_vocab=``, so that it is
    asked and answers in the log's own ids.

    ``progress=False`` shows no bar (a recipe's ``--quiet``); with True, the bars show on
    a terminal only.
    """
    from twotower.index.builder import build_index, embed
    from twotower.index.retriever import Retriever, embed_user_table
    from twotower.index.tuner import tune

    items = item_inputs(data)
    item_vectors = embed(model.item_tower, items, desc="embedding items", progress=progress)
    num_items = len(item_vectors)
    item_vocab = getattr(data, "item_vocab", None)
    user_vocab = getattr(data, "user_vocab", None)
    if item_vocab is None and "movie_id" in data.items:
        item_ids = np.asarray(data.items["movie_id"]).astype(np.int64)
    else:
        item_ids = np.arange(num_items, dtype=np.int64)
    item_keys = np.asarray(item_vocab) if item_vocab is not None else item_ids
    l2 = all(getattr(t, "l2_normalize", False) for t in (model.query_tower, model.item_tower))
    index = build_index(item_vectors, item_ids, distance="cosine" if l2 else "dot")
    test_queries = query_inputs(data, data.test)
    # tuned on a uniform sample of the test users: the exact ground truth costs users ×
    # items; a few thousand queries bound the recall tightly (index/tuner.py)
    rows = np.arange(len(data.test))
    if len(rows) > TUNE_QUERIES:
        rows = np.sort(np.random.default_rng(0).choice(len(rows), TUNE_QUERIES, replace=False))
    query_vectors = embed(model.query_tower, {name: np.asarray(col)[rows]
                                              for name, col in test_queries.items()},
                          desc="embedding users", progress=progress)
    # the tuning bar on a terminal only (carriage returns in a log file are noise), as
    # embed's bars
    tuned = tune(index, query_vectors, target_recall=target_recall, k=min(k, index.size),
                 progress=progress and sys.stderr.isatty())
    # the served state: every user as the whole log leaves them (history up to and
    # including their last interaction, every item of their log excluded), not the test
    # split's state before the held-out item, which is only for measuring
    serving = getattr(data, "serving", None)
    if serving is None:
        raise ValueError("the data has no serving state (RetrievalData.serving): build it "
                         "with twotower.data.movielens.retrieval_task")
    user_table = {k: np.asarray(v) for k, v in query_inputs(data, serving).items()}
    user_ids = user_table["user_id"]
    user_seen = seen_items(data.seen_all, user_ids, serving.user, item_ids)
    vocabs = {}
    if item_vocab is not None:
        vocabs["item_vocab"] = np.asarray(item_vocab)
    if user_vocab is not None:
        vocabs["user_vocab"] = np.asarray(user_vocab)
    # every known user's query vector, once: u2i by user id then runs no tower
    user_vectors = embed_user_table(model.query_tower, user_table, progress=progress)
    retriever = Retriever(index, model.query_tower, model.item_tower, user_table=user_table,
                          user_seen=user_seen, user_vectors=user_vectors, **vocabs)
    return ServingExport(
        retriever=retriever, index=index, tuned=tuned, user_ids=user_ids, item_ids=item_ids,
        item_keys=item_keys,
        query_example={k: v[:2] for k, v in test_queries.items()},
        item_example=item_inputs(data, [0, 1]) if num_items > 1 else item_inputs(data, [0]))


def seen_items(seen, user_ids, rows, item_ids):
    """The Retriever's :class:`~twotower.index.retriever.SeenItems`: user ``user_ids[j]``
    saw the index ids ``item_ids[seen[rows[j]]]``.

    ``seen`` is per user row (RaggedRows, or a list of arrays on the in-memory road).
    From RaggedRows nothing per user is built: when the rows are 0..k-1 in order (the
    streamed road's serving users) the items share ``seen``'s int32 values, and when
    ``item_ids`` is 0..N-1 (a log's internal ids) they are not mapped (no copy)."""
    from twotower.data.ragged_rows import RaggedRows
    from twotower.index.retriever import SeenItems, concatenated

    user_ids = np.asarray(user_ids, np.int64)
    rows = np.asarray(rows, np.int64)
    if len(user_ids) != len(rows):
        raise ValueError(f"{len(user_ids)} user ids for {len(rows)} seen-item rows")
    if np.any(user_ids[1:] < user_ids[:-1]):
        order = np.argsort(user_ids, kind="stable")
        user_ids, rows = user_ids[order], rows[order]
    item_ids = np.asarray(item_ids)
    identity = np.array_equal(item_ids, np.arange(len(item_ids)))
    if isinstance(seen, RaggedRows):
        taken = seen.take(rows)
        offsets, items = taken.offsets, taken.values
    else:
        offsets, items = concatenated([np.asarray(seen[r], np.int64) for r in rows.tolist()])
    return SeenItems(user_ids, offsets, items if identity else item_ids[items])


RECALL_BATCH = 1024


def index_recall_curve(export, data, ks=INDEX_KS, *, max_queries=None):
    """recall@K of the index's own u2i answers for each test row's held-out item, the
    row's seen items excluded as in the exact evaluation: what a served model scores.
    As there (metrics/retrieval_report.py, repeats="new"), a row whose target the user
    had already seen is left out of the recall: excluded, it cannot be found. With
    ``max_queries``, a uniform sample (seeded) of that many test rows when there are more.
    Returns (the ks that fit the corpus, found ids [rows asked, max K], recalls)."""
    from twotower.index.sampled_evaluation import sample_queries

    ks = [k for k in ks if k <= export.index.size]
    test = data.test
    if max_queries is not None and len(test) > max_queries:
        test = test.take(sample_queries(len(test), max_queries))
    seen = data.exclusions(test)
    queries = query_inputs(data, test)
    found = []
    # a batch of rows at a time: the exclusions in the retriever's ids (and the index's
    # per-query sets of them) are a batch's, not every sampled user's seen items at once
    for a in range(0, len(test), RECALL_BATCH):
        b = min(a + RECALL_BATCH, len(test))
        exclude = [export.item_keys[np.asarray(s, np.int64)] for s in seen[a:b]]
        with warnings.catch_warnings():  # recall beyond the tuned k is what this measures
            warnings.filterwarnings("ignore", message="search with k=", category=UserWarning)
            got, _ = export.retriever.u2i({k: np.asarray(v)[a:b] for k, v in queries.items()},
                                          max(ks), exclude=exclude)
        found.append(got)
        del exclude
    found = np.concatenate(found) if found else np.zeros((0, max(ks)), np.int64)
    target_rows = np.asarray(test.item, np.int64)
    targets = export.item_keys[target_rows]
    new = np.array([t not in set(s.tolist()) for t, s in zip(target_rows, seen)], bool)
    hit_rank = np.full(len(targets), np.inf)
    for q, (row, t) in enumerate(zip(found, targets)):
        where = np.flatnonzero(row == t)
        if where.size:
            hit_rank[q] = where[0] + 1
    if not new.any():
        return ks, found, [float("nan") for _ in ks]
    return ks, found, [float(np.mean(hit_rank[new] <= k)) for k in ks]


def index_metrics(export, data, *, max_queries=20_000):
    """metrics.json entries of an export: the index's own recall@K (on at most
    ``max_queries`` test rows, sampled uniformly; ``index_recall_queries`` says how
    many), its recall@10 vs brute force, queries/s and build time, its size."""
    ks, found, curve = index_recall_curve(export, data, max_queries=max_queries)
    out = {f"index_recall@{k}": v for k, v in zip(ks, curve)}
    out["index_recall_queries"] = int(len(found))
    out.update({"index_vs_exact_recall@10": float(export.tuned.recall),
                "index_qps": float(export.tuned.qps),
                "index_build_s": float(export.index.build_seconds),
                "num_items": int(export.index.size), "num_users": int(len(export.user_ids))})
    return out


def write_serving(folder, export, model, *, extra=None, k=10):
    """Writes ``folder/index`` (the index folder ``twotower serve`` takes: ScaNN index,
    both towers as SavedModels, user table, seen items, checksummed manifest) and
    ``folder/saved_model`` (query tower + ScaNN as one SavedModel answering top-``k``
    item ids for query features)."""
    from twotower.index import persistence, saved_model

    persistence.save(os.path.join(folder, "index"), export.retriever,
                     query_example=export.query_example, item_example=export.item_example,
                     extra=extra or {})
    saved_model.export(os.path.join(folder, "saved_model"), export.index, model.query_tower,
                       k=min(k, export.index.size), query_example=export.query_example)
