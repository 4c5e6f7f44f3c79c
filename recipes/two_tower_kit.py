"""The two-tower recipes' kit (dssm, youtube, mns, ebr, demo): a recipe is a RetrievalLoss
plus a few tower choices, composed from library parts by :func:`train_recipe`.

    data   = load_data(settings)                       # MovieLens or your log -> retrieval task
    q, i   = build_towers(data, settings)              # towers/retrieval_towers.py
    model  = TwoTowerModel(q, i, loss, item_features=item_table(i, data))
    stats  = fit(model, data, settings)                # training/fit.py (resumable)
    report = evaluate_recipe(model, data, settings)    # exact, or sampled through ScaNN
    export = export_retriever(model, data)             # index/export.py
    write_serving(folder, export, model)               # OUT/index (twotower serve), OUT/saved_model

``check_outputs(settings)`` refuses a bad ``--out`` or ``--checkpoint-dir`` right after
parsing, before data is loaded; :func:`report` writes ``--out`` through
``twotower.artifacts.atomic_directory`` (replacing only an earlier twotower output, and
only with ``--overwrite``).
"""

import argparse
import os

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)

import tensorflow as tf

from twotower.artifacts import OutputPathError, atomic_directory, check_output_dir
from twotower.data import movielens
from twotower.data.retrieval_task import item_inputs, query_inputs
from twotower.index.export import export_retriever, index_metrics, write_serving
from twotower.metrics.retrieval_report import KS, popularity_report, retrieval_report
from twotower.phases import Phases
from twotower.recipes.two_tower_settings import (RecipeConfig,  # noqa: F401
                                                 add_common_arguments, config_from_args)
from twotower.reporting import format_table, plot_curves, twotower_command, write_metrics
from twotower.towers.retrieval_towers import build_towers, item_table
from twotower.towers.two_tower_model import TwoTowerModel
from twotower.training.distribute import is_chief, make_strategy
from twotower.training.resumable_fit import check_checkpoint_dir, fit


def check_outputs(config):
    """Refuses a bad ``--out`` / ``--checkpoint-dir`` (OutputPathError naming the path and
    the flag) before any data is loaded. Call it right after parsing."""
    if getattr(config, "warm_start", None):  # the folder and the tower shapes, no data
        from twotower.training.warm_start import check_settings, read_state

        check_settings(config.warm_start, read_state(config.warm_start), config)
    if config.out:
        check_output_dir(config.out, overwrite=config.overwrite)
    if config.checkpoint_dir:
        check_checkpoint_dir(config.checkpoint_dir)
        if config.out and os.path.abspath(config.out) == os.path.abspath(config.checkpoint_dir):
            raise OutputPathError(f"--checkpoint-dir {config.checkpoint_dir!r} must not be "
                                  "the --out folder")


_DATA_CACHE = {}
_KINDS = ("categorical", "text", "numeric", "multi_hot")


def load_data(config):
    """The retrieval task for ``config`` (cached per process): MovieLens (``--data``), or
    the user's own log (``--interactions`` with optional ``--items`` / ``--users``
    feature tables, twotower.data.log_task), printing what was read and inferred."""
    retrieval = movielens.RetrievalConfig(min_rating=config.min_rating, split=config.split,
                                          history_length=config.history_length)
    interactions = getattr(config, "interactions", None)
    if interactions:
        kinds = {side: {k: tuple(getattr(config, f"{side}_{k}", ()) or ()) for k in _KINDS}
                 for side in ("item", "user")}
        key = ("log", interactions, config.items, config.users, config.user_col,
               config.item_col, config.time_col, repr(kinds), config.infer_features,
               config.min_rating, config.split, config.history_length, config.seed)
        if key not in _DATA_CACHE:
            from twotower.data import interactions as logs
            from twotower.data.log_task import load_log_task

            _DATA_CACHE[key] = load_log_task(
                interactions, retrieval, items=config.items, users=config.users,
                columns=logs.ColumnNames(config.user_col, config.item_col, config.time_col),
                item_kinds=kinds["item"], user_kinds=kinds["user"],
                infer=config.infer_features, verbose=not getattr(config, "quiet", False),
                seed=config.seed, memory_limit_gb=getattr(config, "read_memory_gb", None))
        return _DATA_CACHE[key]
    key = (config.source, config.min_rating, config.split, config.history_length)
    if key not in _DATA_CACHE:
        raw = movielens.load_movielens(config.source)
        _DATA_CACHE[key] = movielens.prepare_retrieval(raw, retrieval)
    return _DATA_CACHE[key]


def evaluate_towers(query_tower, item_tower, data, split=None, *, progress=True):
    """Full-corpus metrics of two towers on a split (test by default)."""
    from twotower.towers.two_tower_model import embed

    split = split if split is not None else data.test
    u = embed(query_tower, query_inputs(data, split), progress=progress)
    v = embed(item_tower, item_inputs(data), progress=progress)
    return retrieval_report(u, v, split.item, data.exclusions(split), data.head_items())


def evaluate_model(model, data, split=None):
    """Full-corpus metrics of a TwoTowerModel (see metrics/retrieval_report.py)."""
    return evaluate_towers(model.query_tower, model.item_tower, data, split)


def evaluate_recipe(model, data, config, *, progress=True):
    """The test metrics of a trained model, with ``popularity_*`` (the popularity
    baseline on the same queries), ``exact`` and ``evaluated_users``.

    Up to ``config.exact_eval_items`` items (default 200,000) every test query ranks the
    whole catalogue exactly (:func:`evaluate_model`; ``exact`` 1). Above it, a uniform
    sample of ``config.eval_users`` test queries (default 20,000) is answered through a
    tuned ScaNN index (index/sampled_evaluation.py; ``exact`` 0), and the run says so."""
    from twotower.index import sampled_evaluation as sampled
    from twotower.towers.two_tower_model import embed

    test = data.test
    limit = getattr(config, "exact_eval_items", EXACT_EVAL_ITEMS)
    if data.num_items <= limit:
        metrics = evaluate_towers(model.query_tower, model.item_tower, data, test,
                                  progress=progress)
        pop = popularity(data)
        metrics.update({"exact": 1, "evaluated_users": int(len(test))})
    else:
        rows = sampled.sample_queries(len(test), getattr(config, "eval_users", sampled.SAMPLE),
                                      seed=config.seed)
        if progress:
            print(f"evaluation: {len(rows):,} of {len(test):,} test users, sampled uniformly, "
                  f"through a ScaNN index tuned to recall@10 {config.target_recall} (the "
                  f"catalogue's {data.num_items:,} items are more than --exact-eval-items "
                  f"{limit:,})", flush=True)
        part = test.take(rows)
        exclusions = data.exclusions(part)
        u = embed(model.query_tower, query_inputs(data, part), desc="embedding test users",
                  progress=progress)
        v = embed(model.item_tower, item_inputs(data), desc="embedding items",
                  progress=progress)
        metrics = sampled.index_report(u, v, part.item, exclusions, data.head_items(),
                                       target_recall=config.target_recall, progress=progress)
        pop = sampled.report_from_lists(sampled.popularity_lists(data.item_counts, exclusions),
                                        part.item, exclusions, data.head_items(),
                                        data.num_items)
        metrics.update({"exact": 0, "evaluated_users": int(len(rows))})
    metrics.update({f"popularity_{k}": v for k, v in pop.items()})
    return metrics


EXACT_EVAL_ITEMS = 200_000


def popularity(data, split=None):
    """The popularity baseline's metrics on the same split and exclusions."""
    split = split if split is not None else data.test
    return popularity_report(data.item_counts, split.item, data.exclusions(split),
                             data.head_items())


def train_recipe(config, loss, *, history=True, l2_normalize=False):
    """Loads data, builds towers and a TwoTowerModel with ``loss`` (a RetrievalLoss or a
    function data -> RetrievalLoss), fits and evaluates. Returns (model, data, metrics)."""
    config.validate()
    check_outputs(config)
    strategy = make_strategy(config.strategy)  # first: multi-worker sets up collectives
    if strategy.num_replicas_in_sync > 1:
        # XLA compiles one device's step: a jit-compiled step over several replicas reads
        # another device's variable copy and fails (measured on 2 logical CPUs)
        config.jit_compile = False
    phases = Phases(quiet=getattr(config, "quiet", False))
    with phases("read", "reading the data"):
        data = load_data(config)
    tf.keras.utils.set_random_seed(config.seed)
    # Every variable (towers, loss, estimator, optimizer) is made in the strategy's scope;
    # a loss layer made outside it is rebuilt from its config inside.
    with strategy.scope(), phases("train", "building the towers and training"):
        if callable(loss) and not isinstance(loss, tf.keras.layers.Layer):
            loss = loss(data)
        elif config.strategy != "none":
            loss = type(loss).from_config(loss.get_config())
        query_tower, item_tower = build_towers(data, config, history=history,
                                               l2_normalize=l2_normalize)
        warm = None
        if getattr(config, "warm_start", None):  # training/warm_start.py
            from twotower.training.warm_start import WarmStart

            warm = WarmStart(config.warm_start, config)
            query_tower, item_tower = warm.towers(data, query_tower, item_tower)
        model = TwoTowerModel(query_tower, item_tower, loss,
                              item_features=item_table(item_tower, data))
        if warm is None:
            stats = fit(model, data, config)
        elif config.epochs == 0:
            warm.apply(model)
            stats = warm.without_training(model, config)
        else:
            stats = fit(model, data, config, extra_callbacks=[warm.apply(model)])
    if not is_chief(strategy):
        config.out = None  # the chief writes --out; the other workers only train
    with phases("evaluate", "evaluating on the test split"):
        metrics = evaluate_recipe(model, data, config, progress=not phases.quiet)
    metrics.update(stats)
    metrics.update(phases.metrics())
    if loss.learn_temperature:
        metrics["temperature"] = float(loss.temperature.numpy())
    return model, data, metrics


METRIC_ROWS = ("recall@10", "recall@20", "recall@50", "recall@100", "ndcg@10", "ndcg@50",
               "mrr", "coverage@50", "head_recall@50", "tail_recall@50")

# settings worth keeping in the index manifest (what trained it)
_MANIFEST_CONFIG = ("epochs", "batch_size", "lr", "dim", "seed", "split", "history_length")


def report(name, config, metrics, data=None, model=None):
    """Prints the table and, when config.out is set, writes there atomically (replacing
    only an earlier twotower output, with config.overwrite): metrics.json,
    recall_at_k.png and — given the model — the tuned index folder ``index/`` and
    ``saved_model/`` (:func:`export_retriever`, :func:`write_serving`). Returns the
    table text."""
    # the baseline train_recipe scored on the same test queries, else the exact one
    pop = {k[len("popularity_"):]: v for k, v in metrics.items() if k.startswith("popularity_")}
    if not pop and data is not None:
        pop = popularity(data)
    rows = [{"metric": k, name: metrics[k], **({"popularity": pop[k]} if k in pop else {})}
            for k in METRIC_ROWS if k in metrics]
    table = format_table(rows)
    extra = format_table([{"examples/sec": metrics.get("examples_per_sec", float("nan")),
                           "train seconds": metrics.get("train_seconds", float("nan")),
                           "last loss": metrics.get("loss_last_epoch", float("nan"))}])
    source = getattr(data, "name", None) or "MovieLens"
    scope = ("full-corpus retrieval" if metrics.get("exact", 1) else
             f"retrieval through a tuned ScaNN index on {metrics.get('evaluated_users', 0):,} "
             "test users sampled uniformly (not exact)")
    print(f"\n{name} on {source} ({data.config.split if data else ''}), {scope}, seen items "
          f"excluded (held-out repeats left out, as serving excludes them)\n{table}\n{extra}")
    if config.out:
        export = None
        metrics = dict(metrics)
        if model is not None and data is not None and getattr(config, "export", True):
            phases = Phases(quiet=getattr(config, "quiet", False))
            with phases("export", "embedding the catalogue and users, building and tuning "
                        "the ScaNN index"):
                export = export_retriever(model, data, target_recall=config.target_recall,
                                          progress=not phases.quiet)
                metrics.update(index_metrics(export, data))
            metrics.update(phases.metrics())
            print(f"ScaNN index: {export.index.size} items, recall@10 vs brute force "
                  f"{export.tuned.recall:.4f} at {export.tuned.qps:,.0f} queries/s; "
                  f"index recall@10 {metrics.get('index_recall@10', float('nan')):.4f}")
        # the folder's writing is a phase of its own, so that metrics.json's seconds and
        # peak memory count it too
        writing = Phases(quiet=getattr(config, "quiet", False))
        with atomic_directory(config.out, overwrite=config.overwrite) as tmp:
            with writing("write", f"writing {config.out}"):
                if export is not None:
                    write_serving(tmp, export, model, extra={
                        "recipe": name, **{k: getattr(config, k) for k in _MANIFEST_CONFIG
                                           if hasattr(config, k)}})
                if model is not None and data is not None:  # what --warm-start reads
                    from twotower.training.warm_start import STATE_DIR, save_state

                    save_state(os.path.join(tmp, STATE_DIR), model, data, config)
            metrics.update(writing.metrics())
            write_metrics(tmp, metrics)
            curves = {name: (list(KS), [metrics[f"recall@{k}"] for k in KS])}
            if pop:
                curves["popularity"] = (list(KS), [pop[f"recall@{k}"] for k in KS])
            plot_curves(os.path.join(tmp, "recall_at_k.png"), curves, xlabel="K",
                        ylabel="recall@K", title=f"{name}: {source} full-corpus recall@K")
        print(f"wrote {config.out}: " + (f"index/ (serve it: {twotower_command()} serve "
              f"{os.path.join(config.out, 'index')}), saved_model/, " if export else "")
              + "metrics.json, recall_at_k.png")
    return table


def make_parser(prog, description, defaults):
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_common_arguments(parser, defaults)
    return parser
