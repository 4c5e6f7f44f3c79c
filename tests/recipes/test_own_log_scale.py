"""The CLI road at scale, on a small log: the optimizer choice (auto / adam / lazy_adam),
evaluation on a sample of test users through ScaNN above --exact-eval-items, each phase's
seconds and the peak memory in metrics.json, and --quiet.

The log: 240 users with string ids, each of 10 items mostly from its category (u % 4 of 4
categories of 25 items), and items.csv with the category (101 items: one only there)."""

import json
import os

import numpy as np
import pytest

import twotower.cli as cli

CATEGORIES = ("red", "blue", "green", "gold")


def write_log(folder, seed=0):
    rng = np.random.default_rng(seed)
    log, items = os.path.join(folder, "log.csv"), os.path.join(folder, "items.csv")
    with open(log, "w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u in range(240):
            for t in range(10):
                cat = u % 4 if t != 5 else int(rng.integers(4))
                f.write(f"u{u},item_{cat * 25 + int(rng.integers(25)):03d},"
                        f"{1_700_000_000 + 3600 * t + u}\n")
    with open(items, "w") as f:
        f.write("item_id,category\n" + "".join(f"item_{i:03d},{CATEGORIES[min(i // 25, 3)]}\n"
                                               for i in range(101)))
    return log, items


def _run(tmp_path, *flags):
    log, items = write_log(str(tmp_path))
    out = str(tmp_path / "out")
    code = cli.main(["youtube", "--interactions", log, "--items", items, "--epochs", "2",
                     "--batch-size", "64", "--dim", "16", "--lr", "0.02", "--no-export",
                     "--out", out, *flags])
    assert code == 0
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("choice, lazy", [("adam", 0), ("lazy_adam", 1), ("auto", 0)])
def test_each_optimizer_choice_trains(tmp_path, capsys, choice, lazy):
    metrics = _run(tmp_path, "--optimizer", choice)
    assert metrics["lazy_adam"] == lazy
    assert metrics["jit_compile"] == 1  # either Adam compiles with XLA on one device
    assert metrics["table_rows"] >= 240 + 2 * 101  # user ids, history, item ids
    assert metrics["loss_epoch_2"] < metrics["loss_epoch_1"]
    assert metrics["recall@50"] > metrics["popularity_recall@50"], metrics
    said = capsys.readouterr().out
    assert ("LazyAdam" if lazy else "Adam, every row every step") in said
    # one line an epoch when the output is not a terminal, examples/s on it
    assert "examples/s:" in said
    assert metrics["exact"] == 1 and metrics["evaluated_users"] == 240


def test_above_exact_eval_items_a_sample_of_users_goes_through_the_index(tmp_path, capsys):
    metrics = _run(tmp_path, "--exact-eval-items", "50", "--eval-users", "100")
    said = capsys.readouterr().out
    assert metrics["exact"] == 0 and metrics["evaluated_users"] == 100
    assert "100 of 240 test users, sampled uniformly" in said and "(not exact)" in said
    assert 0.0 <= metrics["recall@10"] <= metrics["recall@50"] <= 1.0
    assert 0.0 <= metrics["popularity_recall@50"] <= 1.0
    assert metrics["index_eval_recall@10"] > 0.9


def test_phases_and_peak_memory_in_metrics_and_quiet_says_nothing_of_them(tmp_path, capsys):
    metrics = _run(tmp_path, "--quiet")
    for phase in ("read", "train", "evaluate"):
        assert metrics[f"seconds_{phase}"] > 0, phase
    assert 0.05 < metrics["peak_rss_gb"] < 64
    said = capsys.readouterr().out
    assert " ..." not in said and "examples/s:" not in said and "optimizer:" not in said
    assert "| recall@10" in said  # the results table still comes


def test_a_bad_optimizer_is_refused_before_work(tmp_path, capsys):
    log, _ = write_log(str(tmp_path))
    with pytest.raises(SystemExit) as e:
        cli.main(["youtube", "--interactions", log, "--optimizer", "sgd"])
    assert e.value.code == 2 and "--optimizer" in capsys.readouterr().err


def test_keras_verbose_follows_the_terminal_and_the_flags(monkeypatch):
    import sys

    from twotower.recipes.youtube import Config
    from twotower.training.resumable_fit import keras_verbose

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert keras_verbose(Config()) == 1
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert keras_verbose(Config()) == 2
    assert keras_verbose(Config(verbose=1)) == 1
    assert keras_verbose(Config(verbose=2, quiet=True)) == 0
    with pytest.raises(ValueError, match="--verbose"):
        Config(verbose=5).validate()
    assert np.isfinite(Config().exact_eval_items)


def test_the_export_tunes_on_a_uniform_sample_of_test_users(tmp_path, monkeypatch):
    from twotower.index import export
    from twotower.recipes import youtube

    log, items = write_log(str(tmp_path))
    config = youtube.Config(interactions=log, items=items, epochs=1, batch_size=64, dim=16,
                            quiet=True)
    model, data, _ = youtube.train(config)
    monkeypatch.setattr(export, "TUNE_QUERIES", 100)
    served = export.export_retriever(model, data)
    assert served.tuned.num_queries == 100 < len(data.test)
    assert len(served.user_ids) == 240  # every user is still served
    monkeypatch.setattr(export, "TUNE_QUERIES", 5_000)
    assert export.export_retriever(model, data).tuned.num_queries == len(data.test)


def test_the_export_shares_the_logs_seen_items_and_batches_the_index_recall(tmp_path,
                                                                         monkeypatch):
    from twotower.index import export
    from twotower.index.retriever import SeenItems
    from twotower.recipes import youtube

    log, items = write_log(str(tmp_path))
    config = youtube.Config(interactions=log, items=items, epochs=1, batch_size=64, dim=16,
                            quiet=True)
    model, data, _ = youtube.train(config)
    served = export.export_retriever(model, data, progress=False)
    seen = served.retriever.user_seen
    # the streamed road's seen items, as they are: no per-user dict, no copy
    assert isinstance(seen, SeenItems) and np.shares_memory(seen.items, data.seen_all.values)
    for r in (0, 17, 239):
        np.testing.assert_array_equal(seen[int(data.serving.user[r])],
                                      data.seen_all[int(data.serving.user[r])])
    ks, found, curve = export.index_recall_curve(served, data)
    monkeypatch.setattr(export, "RECALL_BATCH", 7)  # 240 rows in 35 batches
    ks_b, found_b, curve_b = export.index_recall_curve(served, data)
    assert ks_b == ks and curve_b == curve
    np.testing.assert_array_equal(found_b, found)


@pytest.mark.parametrize("quiet", [False, True])
def test_the_export_bars_show_on_a_terminal_unless_quiet(tmp_path, capsys, monkeypatch, quiet):
    import sys

    log, items = write_log(str(tmp_path))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # as a terminal
    code = cli.main(["youtube", "--interactions", log, "--items", items, "--epochs", "1",
                     "--batch-size", "64", "--dim", "8", "--out", str(tmp_path / "out"),
                     *(["--quiet"] if quiet else [])])
    assert code == 0
    err = capsys.readouterr().err
    assert ("tuning ScaNN" in err) is not quiet, err[-400:]
