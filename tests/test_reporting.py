import json
import os

import numpy as np
import pytest

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
