"""The tuner's progress bar ends complete, on its own line: the next line printed never
lands on it."""

import numpy as np

from twotower.index.builder import build_index
from twotower.index.tuner import tune


def test_the_tuning_bar_ends_complete_on_its_own_line(capsys):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    index = build_index(vectors, np.arange(300), distance="dot")
    tune(index, vectors[:50], target_recall=0.9, k=5, progress=True)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").rstrip(" ").splitlines()
    bars = [line for line in last if line.startswith("tuning ScaNN")]
    assert bars and "100%" in bars[-1], err
    assert err.endswith("\n"), repr(err[-80:])
