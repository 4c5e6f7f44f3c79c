"""Airbnb listing embeddings (Grbovic & Cheng, "Real-time Personalization using
Embeddings for Search Ranking at Airbnb", KDD 2018, §3.1), beside plain item2vec.

Skip-gram with negative sampling over click sessions, with the paper's two changes:

  (a) the booked listing l_b is a global context: (l, l_b) is a positive pair for every
      centre l of a booked session (data/global_context.py), and
  (b) negatives come from the centre's own market as well as the whole corpus:
      k unigram^0.75 corpus negatives + m same-market negatives, drawn uniformly from the
      centre's market (ConcatNegatives[SampledNegatives, GroupNegatives(anchor="query")]).

    L = − Σ_(l,c) log σ(v'_c·v_l) − Σ_(l,n)∈D_neg log σ(−v'_n·v_l)
        − log σ(v'_{l_b}·v_l) − Σ_(l,m)∈D_mn log σ(−v'_m·v_l)

Both are the same two-tower word2vec model and sparse SGD as item2vec
(training/word2vec_trainer.py); item2vec is trained beside it on the SAME training sessions with
the same dim, window, epochs and seed (no booking context, corpus negatives only).

Input (data/sessions.py; the same flags as item2vec and eges):
  --sessions FILE       click sessions as CSV, `session_id,item_id,timestamp[,booked][,market]`
                        (booked 0/1 marks the session's booking, usually its last event);
  --interactions PATH   an interaction log, `user_id,item_id,timestamp[,booked][,market]`
                        (CSV, Parquet, folder of shards): each user's events in time
                        order, split into sessions after --session-gap seconds of
                        inactivity (default 1800, the paper's 30 minutes);
  neither               offline, MovieLens-100K adapted (not real bookings): a user's
                        ratings split into sessions at gaps of more than --max-gap-hours,
                        the session's last rating >= --booking-rating as its "booking", a
                        film's first genre as its "market".
--booked-col / --market-col name other columns. Without a booked column there is no
booking context (a warning says so when another column looks like bookings, or when the
booked column marks none); without a market column pass --market-negatives 0.

Evaluation: one event of every session of >= 3 events is held out (the last one; in a
session that ends with its booking, the last click before it of another item, so that
the booking stays in training as the session's global context: see
data/sessions.split_booked_sessions); its query is the event before it and every other
item is ranked by cosine (the session's earlier items and the query excluded): next-item
HR@10 / NDCG@10, for both models and for popularity (items ranked by training count).
same_market@10: the share of an item's 10 nearest cosine neighbours in its own market,
averaged over items.

    twotower airbnb --out out/airbnb                            # MovieLens-100K, offline
    twotower airbnb --sessions clicks.csv --out out/mine        # your own click sessions
    twotower airbnb --interactions log.parquet --market-negatives 0 --out out/mine

Writes to --out (new, empty, or an earlier twotower output with --overwrite; checked
before any work): vectors.txt (word2vec text format; your own item ids as the keys —
whitespace in an id becomes '_' —, or "index:title" for MovieLens), model/ (the Airbnb
model's config.json + weights.h5 + vocab.json, with each row's item id under "item_ids";
training.word2vec_trainer.load_model rebuilds its towers), index/ (a ScaNN cosine index of the listing vectors, tuned, addressed by your
own item ids, or by MovieLens movie id: ``twotower serve OUT/index``, then
``/i2i {"item_ids": ["listing_17"]}``), hit_rate.png (HR@K of both models and
popularity), metrics.json; prints the side-by-side table (airbnb, item2vec, popularity).

Bad input raises (``twotower airbnb`` prints it as one line, exit status 2;
TWOTOWER_DEBUG=1 shows the traceback).
"""

import argparse
import os
import sys

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)

from twotower.artifacts import atomic_directory
from twotower.command import run_as_main
from twotower.data.global_context import GlobalContext
from twotower.data.movielens import load_movielens
from twotower.data.samplers import UnigramSampler
from twotower.data.sessions import (booking_warnings, describe, movielens_booking_sessions,
                                    split_booked_sessions)
from twotower.data.vocab import Vocabulary
from twotower.data.word2vec_format import write_word2vec_text
from twotower.losses import ConcatNegatives, GroupNegatives, SampledNegatives
from twotower.metrics.item_to_item import next_item_metrics, same_group_share
from twotower.recipes.session_flags import (add_session_arguments, check_session_arguments,
                                            sessions_from_args)
from twotower.recipes import vector_export as vx
from twotower.recipes.word2vec_flags import (add_training_arguments, add_vector_arguments,
                                             training_config)
from twotower.reporting import format_table, write_metrics
from twotower.training.word2vec_trainer import (DataConfig, ModelConfig, build_model,
                                                train_word2vec, validate,
                                                word_vectors)


K = 10


# Airbnb 2018, §3.1: a new session after 30 minutes of inactivity
SESSION_GAP = 1800.0


def warn(message):
    print(f"twotower airbnb: warning: {message}", file=sys.stderr, flush=True)


def load_sessions(args):
    """The SessionLog of --sessions / --interactions or of MovieLens (--source), its
    origin, the external id of every log item (your item ids; MovieLens movie ids) and
    whether it is MovieLens. Warns when the log was read for bookings and has none."""
    booked_col, market_col = args.booked_col or "booked", args.market_col or "market"
    log, origin = sessions_from_args(args, session_gap=SESSION_GAP, booked_col=booked_col,
                                     market_col=market_col)
    if log is not None:
        print(describe(log), flush=True)
        for message in booking_warnings(log, booked_col):
            warn(message)
        vx.vector_keys(log.item_names)              # ids that clash in vectors.txt: refused now
        return log, origin, np.asarray(log.item_names, dtype=str), False
    source = args.source or "auto"
    ml = load_movielens(source)
    return (movielens_booking_sessions(ml, max_gap_hours=args.max_gap_hours,
                                       booking_rating=args.booking_rating),
            f"movielens:{source}", np.asarray(ml.movies["movie_id"], np.int64), True)


def check_arguments(args):
    """ValueErrors naming the flag and its value, before any data is read."""
    check_session_arguments(args, session_gap=SESSION_GAP)
    if isinstance(args.market_negatives, bool) or args.market_negatives < 0:
        raise ValueError(f"--market-negatives must be an int >= 0, got {args.market_negatives!r}")
    if args.sessions is None and args.interactions is None:
        for flag in ("--booked-col", "--market-col"):
            value = getattr(args, flag[2:].replace("-", "_"))
            if value is not None:
                raise ValueError(f"{flag} {value!r} names a column of --sessions or "
                                 f"--interactions (MovieLens books by --booking-rating)")


def prepare(log, min_count):
    """Training sentences (item ids as tokens), vocabulary, the booked item of every
    training sentence in vocabulary ids (-1: none or out of vocabulary), held-out pairs,
    each vocabulary item's market, and counts of what was left out."""
    train, booked, held, dropped = split_booked_sessions(log)
    if not train:
        raise ValueError(f"no session has 2 or more events ({log.num_sessions} sessions, "
                         f"all single-item): nothing to train on")
    if not held:
        raise ValueError("no session has 3 or more events: nothing to hold out for "
                         "evaluation")
    sentences = [s.tolist() for s in train]
    vocab = Vocabulary.build(sentences, min_count=min_count)
    booked_vocab = np.array([vocab.index.get(int(b), -1) if b >= 0 else -1 for b in booked],
                            dtype=np.int64)
    market = log.item_market[np.asarray(vocab.words, np.int64)]
    info = {"sessions": log.num_sessions, "train_sessions": len(train),
            "single_item_sessions_dropped": dropped,
            "booked_sessions": int((booked >= 0).sum()),
            "booked_items_out_of_vocabulary": int(((booked >= 0) & (booked_vocab < 0)).sum()),
            "num_items": len(vocab),
            "num_markets": int(len(np.unique(market[market >= 0]))) if log.has_markets else 0}
    if log.booked.any() and not (booked >= 0).any():
        warn(f"{log.num_booked_sessions} sessions have a booking, but none is left in a "
             f"training session of 2 or more events: there is no booking context")
    return sentences, vocab, booked_vocab, held, market, info


def airbnb_model_fn(vocab, market, model_config, market_negatives, seed):
    """build_model with corpus + same-market negatives (the paper's D_neg ∪ D_mn)."""
    corpus = SampledNegatives(UnigramSampler(vocab.counts, 0.75, seed=seed),
                              model_config.negative, shared=False)
    same_market = GroupNegatives(market, market_negatives, anchor="query")
    return lambda v: build_model(v, model_config, seed,
                                 candidates=ConcatNegatives([corpus, same_market]))


def evaluate(vocab, vectors, held, market=None):
    """{hr@K, ndcg@K[, same_market@K]} of one model, and popularity's hr@K / ndcg@K and
    eval_sessions (the same for every model on one vocabulary)."""
    m = next_item_metrics(vocab, vectors, held, k=K)
    out = {f"hr@{K}": m[f"hr@{K}"], f"ndcg@{K}": m[f"ndcg@{K}"]}
    if market is not None:
        out[f"same_market@{K}"] = same_group_share(vectors, market, k=min(K, len(vocab) - 1))
    shared = {f"popularity_hr@{K}": m[f"popularity_hr@{K}"],
              f"popularity_ndcg@{K}": m[f"popularity_ndcg@{K}"],
              "eval_sessions": m["eval_users"]}
    return out, shared


def run(args):
    """Trains both models; returns a dict: metrics, vocab, vectors (Airbnb's), names,
    external_ids (per vocabulary row), model and model_config (Airbnb's), curves (HR@K
    of both models and popularity)."""
    data = DataConfig(corpus="sessions", min_count=args.min_count)
    model_config = ModelConfig("sg", "neg", args.negative, args.dim, args.window, args.sample)
    train = training_config(args)
    validate(data, model_config, train)
    check_arguments(args)
    log, origin, external, movielens = load_sessions(args)
    if args.market_negatives and not log.has_markets:
        raise ValueError(f"--market-negatives {args.market_negatives}: {log.source} has no "
                         f"{args.market_col or 'market'!r} column to draw same-market "
                         f"negatives from; name it with --market-col, or pass "
                         f"--market-negatives 0")
    data.corpus = origin
    sentences, vocab, booked, held, market, info = prepare(log, args.min_count)
    names = [str(log.item_names[int(w)]) for w in vocab.words]

    kwargs = dict(vocab=vocab, progress=not args.quiet)
    model_fn = None
    if args.market_negatives:
        model_fn = airbnb_model_fn(vocab, market, model_config, args.market_negatives, args.seed)
    extra = GlobalContext(booked) if not args.no_booking and (booked >= 0).any() else None
    if extra is None and model_fn is None:
        warn("no booking context and no market negatives: the Airbnb model is item2vec "
             "(the two columns of the table will agree)")
    with vx.divergence_as_input_error():
        _, ours, stats = train_word2vec(sentences, data, model_config, train,
                                        model_fn=model_fn, extra_pairs=extra,
                                        query_is_item=True, description="airbnb", **kwargs)
        _, plain, plain_stats = train_word2vec(sentences, data, model_config, train,
                                               description="item2vec", **kwargs)
    vectors = word_vectors(ours, "sg")
    metrics = dict(info, dim=args.dim, epochs=args.epochs, airbnb_seconds=stats["seconds"],
                   item2vec_seconds=plain_stats["seconds"],
                   airbnb_examples=stats["examples"], item2vec_examples=plain_stats["examples"])
    plain_vectors = word_vectors(plain, "sg")
    for name, v in (("airbnb", vectors), ("item2vec", plain_vectors)):
        m, shared = evaluate(vocab, v, held, market if log.has_markets else None)
        metrics.update(shared)
        metrics.update({f"{name}_{k}": val for k, val in m.items()})
    curves = vx.hit_rate_curves({"airbnb": (vocab, vectors, held),
                                 "item2vec": (vocab, plain_vectors, held)})
    return dict(metrics=metrics, vocab=vocab, vectors=vectors, names=names,
                external_ids=external[np.asarray(vocab.words, np.int64)], model=ours,
                model_config=model_config, curves=curves, movielens=movielens)


def comparison(metrics):
    """The side-by-side table: airbnb, item2vec and popularity on the same held-out
    clicks (same_market@K for the two embeddings, when the log has markets)."""
    keys = (f"hr@{K}", f"ndcg@{K}") + ((f"same_market@{K}",)
                                       if f"airbnb_same_market@{K}" in metrics else ())
    return vx.comparison_rows(metrics, ("airbnb", "item2vec", "popularity"), keys)


def build_parser():
    m = ModelConfig()
    p = argparse.ArgumentParser(
        prog="twotower airbnb",
        description="Airbnb KDD 2018 listing embeddings (skip-gram on click sessions, the "
                    "booked listing as global context, same-market negatives) beside "
                    "item2vec on the same sessions; next-item HR@10 and same-market "
                    "neighbour share; a ScaNN index of the listing vectors.")
    g = p.add_argument_group("data")
    add_session_arguments(g, session_gap=SESSION_GAP, movielens="MovieLens-100K adapted")
    g.add_argument("--booked-col", default=None,
                   help="--sessions / --interactions: the column of 0/1 booking flags (the "
                        "booked listing is the session's global context; default booked; "
                        "without it no session is booked)")
    g.add_argument("--market-col", default=None,
                   help="--sessions / --interactions: the column of the item's market, "
                        "the pool of --market-negatives (default market)")
    g.add_argument("--max-gap-hours", type=float, default=1.0,
                   help="MovieLens: a new session after this many hours between ratings "
                        "(default %(default)s)")
    g.add_argument("--booking-rating", type=float, default=5.0,
                   help="MovieLens: the session's last rating >= this is its booking "
                        "(default %(default)s)")
    g.add_argument("--min-count", type=int, default=1,
                   help="drop items with fewer training events (default %(default)s)")
    g = p.add_argument_group("model")
    g.add_argument("--negative", type=int, default=m.negative,
                   help="corpus negatives per pair, from unigram^0.75 (default %(default)s)")
    g.add_argument("--market-negatives", type=int, default=5,
                   help="negatives per pair from the centre's market, uniform; 0 = off "
                        "(default %(default)s)")
    g.add_argument("--no-booking", action="store_true",
                   help="leave out the booked listing as global context (ablation)")
    add_vector_arguments(g, dim=32, window=5, sample=1e-3,
                         window_help="maximum window within a session",
                         sample_help="subsampling threshold of frequent items; 0 = off")
    add_training_arguments(p, epochs=10, batch_size=512, batch_help="pairs per sparse SGD step")
    vx.add_output_arguments(p)
    return p


def main(argv=None):
    args, out = vx.parse_and_begin(build_parser(), argv, check_arguments)
    result = run(args)
    metrics, vocab, vectors = result["metrics"], result["vocab"], result["vectors"]
    retriever, tuned = vx.index_from_args(vectors, result["external_ids"], args, metrics)
    ids = np.asarray(vocab.words, np.int64)
    keys = ([f"{i}:{n.replace(' ', '_')}" for i, n in zip(ids, result["names"])]
            if result["movielens"] else vx.vector_keys(result["external_ids"]))
    with atomic_directory(out, overwrite=args.overwrite) as tmp:
        write_word2vec_text(os.path.join(tmp, "vectors.txt"), keys, vectors)
        vx.save_model_folder(os.path.join(tmp, "model"), result["model"],
                             result["model_config"], vocab, item_ids=result["external_ids"])
        vx.save_vector_index(os.path.join(tmp, "index"), retriever, tuned, {"recipe": "airbnb"})
        vx.plot_hit_rates(os.path.join(tmp, "hit_rate.png"), result["curves"],
                          title="Airbnb vs item2vec: next click of each session (held out)")
        write_metrics(tmp, metrics)
    print(format_table(comparison(metrics)))
    return vx.finish(out, metrics, lambda k: k.startswith((
        "airbnb_hr", "airbnb_ndcg", "airbnb_same", "item2vec_hr", "item2vec_ndcg",
        "item2vec_same", "popularity_hr", "popularity_ndcg")))


if __name__ == "__main__":
    sys.exit(run_as_main("airbnb", main))
