"""`twotower youtube --strategy multi-worker` on loopback: 2 worker processes with
TF_CONFIG (issue 10 §2), and the --strategy flag's checks.

The multi-process runs use benchmarks/distributed.py's worker harness (the benchmark runs
the same checks and reports their numbers); each takes minutes on a 2-core machine, so
they are marked slow. tests/towers/test_distributed.py keeps a fast 2-process check.
"""

import importlib.util
import json
import os

import pytest

from twotower.recipes import two_tower_kit as common

from twotower.training import distribute
from twotower.recipes import youtube


def _harness():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "distributed.py")
    spec = importlib.util.spec_from_file_location("twotower_bench_distributed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spec(data, **kw):
    return dict({"data": data, "epochs": 2, "batch_size": 32, "lr": 0.02, "dim": 16,
                 "seed": 0}, **kw)


def test_strategy_flag_is_checked_before_any_work(monkeypatch):
    with pytest.raises(ValueError, match="strategy"):
        youtube.Config(strategy="tpu").validate()
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi-worker")
    for bad in ("{not json", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}}),
                json.dumps({"cluster": {"worker": ["127.0.0.1:1"]},
                            "task": {"type": "worker", "index": 3}})):
        with pytest.raises(ValueError, match="TF_CONFIG"):
            distribute.check_tf_config(bad)
    ok = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
          "task": {"type": "worker", "index": 1}}
    assert distribute.check_tf_config(json.dumps(ok)) == ok
    assert "--strategy" in youtube.build_parser().format_help()
    assert youtube.build_parser().parse_args(["--strategy", "mirrored"]).strategy == "mirrored"


def test_cli_refuses_multi_worker_without_tf_config(monkeypatch, capsys, planted_ml100k):
    from twotower import cli

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cli.main(["youtube", "--data", planted_ml100k, "--strategy", "multi-worker"]) == 2
    err = capsys.readouterr().err
    assert "TF_CONFIG" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_workers_match_one_process(planted_ml100k, tmp_path):
    bench = _harness()
    single = bench.run_single(_spec(planted_ml100k), str(tmp_path / "single.json"))
    weights = str(tmp_path / "w.npz")
    two = bench.run_cluster(_spec(planted_ml100k, weights=weights), str(tmp_path / "cluster"))
    assert all(r is not None for r in two), open(tmp_path / "cluster" / "worker0.log").read()[-3000:]
    assert [r["replicas"] for r in two] == [2, 2]
    assert bench.max_weight_diff(f"{weights}.0.npz", f"{weights}.1.npz") == 0.0
    assert two[0]["metrics"]["recall@50"] == two[1]["metrics"]["recall@50"]
    assert abs(two[0]["metrics"]["recall@50"] - single["metrics"]["recall@50"]) <= 0.02


@pytest.mark.slow
def test_killed_worker_cluster_resumes_from_backup(planted_ml100k, tmp_path):
    bench = _harness()
    ckpt = str(tmp_path / "ckpt")
    spec = _spec(planted_ml100k, checkpoint_dir=ckpt, checkpoint_every=5)
    plain = bench.run_cluster(_spec(planted_ml100k), str(tmp_path / "plain"))
    dead = bench.run_cluster(spec, str(tmp_path / "killed"), die=(1, 12))
    assert dead[1] is None  # SIGKILLed itself after step 12 (mid-epoch 1 of 2)
    assert os.path.isdir(os.path.join(ckpt, "chief"))  # BackupAndRestore's checkpoint
    resumed = bench.run_cluster(spec, str(tmp_path / "resumed"))
    assert all(r is not None for r in resumed), open(tmp_path / "resumed" / "worker0.log").read()[-3000:]
    assert resumed[0]["metrics"]["resumed_at_step"] == 10
    assert abs(resumed[0]["metrics"]["recall@50"] - plain[0]["metrics"]["recall@50"]) <= 0.02
