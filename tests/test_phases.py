"""twotower/phases.py: each phase announced, timed, and the peak memory."""

import io

import pytest

from twotower.phases import Phases, peak_rss_gb


def test_phases_are_timed_said_and_summed():
    out = io.StringIO()
    phases = Phases(stream=out)
    with phases("read", "reading the log"):
        pass
    with phases("read"):
        pass
    with pytest.raises(KeyError):
        with phases("train", "training"):
            raise KeyError("x")  # a failing phase still counts its time
    lines = out.getvalue().splitlines()
    assert lines[0] == "reading the log ..." and lines[1].startswith("reading the log: ")
    assert lines[2] == "read ..." and lines[4] == "training ..."
    metrics = phases.metrics()
    assert set(metrics) == {"seconds_read", "seconds_train", "peak_rss_gb",
                            "peak_rss_gb_read", "peak_rss_gb_train"}
    assert metrics["peak_rss_gb_read"] <= metrics["peak_rss_gb_train"] <= \
        metrics["peak_rss_gb"]  # a running maximum
    assert metrics["seconds_read"] >= 0 and metrics["peak_rss_gb"] == pytest.approx(
        peak_rss_gb(), rel=0.5)


def test_quiet_phases_say_nothing():
    out = io.StringIO()
    phases = Phases(quiet=True, stream=out)
    with phases("read"):
        pass
    assert out.getvalue() == "" and "seconds_read" in phases.metrics()


def test_peak_rss_is_a_plausible_size():
    assert 0.01 < peak_rss_gb() < 64
