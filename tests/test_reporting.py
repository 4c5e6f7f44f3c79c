import json
import os

import numpy as np
import pytest

from twotower.artifacts import atomic_directory, atomic_write_json
from twotower.cli import main as cli_main
from twotower.reporting import flatten_metrics, format_table, plot_curves, write_metrics


def test_metrics_are_flat_numbers(tmp_path):
    path = write_metrics(tmp_path, {"recall@10": np.float32(0.5), "n": 3,
                                    "ours": {"ws353": 0.6}})
    assert json.load(open(path)) == {"recall@10": 0.5, "n": 3, "ours_ws353": 0.6}
    with pytest.raises(ValueError, match="metric 'name' must be a number, got 'x'"):
        flatten_metrics({"name": "x"})


def test_table_is_readable():
    table = format_table([{"model": "dssm", "recall@50": 0.25}, {"model": "pop", "recall@50": 0.1}])
    lines = table.splitlines()
    assert lines[0].startswith("| model") and "0.2500" in lines[2] and len(lines) == 4


def test_atomic_directory_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            open(os.path.join(tmp, "a.txt"), "w").write("partial")
            raise RuntimeError("crash")
    assert not target.exists() and os.listdir(tmp_path) == []
    with atomic_directory(target) as tmp:
        atomic_write_json(os.path.join(tmp, "m.json"), {"a": 1})
    with atomic_directory(target) as tmp:  # replaces the old folder whole
        open(os.path.join(tmp, "b.txt"), "w").write("new")
    assert sorted(os.listdir(target)) == ["b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_plot_writes_a_png(tmp_path):
    path = plot_curves(str(tmp_path / "r.png"), {"a": ([10, 50], [0.1, 0.3])},
                       xlabel="K", ylabel="recall@K")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_lists_commands_and_rejects_unknown(capsys):
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "word2vec" in out and "serve" in out and "demo" in out
    assert cli_main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
