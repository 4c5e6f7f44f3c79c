"""A run's phases: each one announced on its own line, timed, and the process's peak
memory, for the user watching and for metrics.json.

    phases = Phases(quiet=config.quiet)
    with phases("read", "reading the log"):
        data = load(...)
    metrics.update(phases.metrics())   # seconds_read, ..., peak_rss_gb

A phase prints ``reading the log ...`` when it starts and ``reading the log: 12.3 s``
when it ends (one line each: readable in a log file as well as a terminal; the long
phases draw their own progress bars in between), nothing with ``quiet``. Nothing of
ours is imported: any layer may use it.
"""

import contextlib
import resource
import sys
import time


def peak_rss_gb():
    """This process's peak resident memory so far, in GiB (``getrusage``'s ru_maxrss:
    KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 30 if sys.platform == "darwin" else 2 ** 20)


class Phases:
    """Seconds per named phase (a phase entered twice adds up) and the lines that say so."""

    def __init__(self, *, quiet=False, stream=None):
        self.quiet = bool(quiet)
        self.stream = stream
        self.seconds = {}
        self.peaks = {}

    def _say(self, text):
        if not self.quiet:
            print(text, file=self.stream or sys.stdout, flush=True)

    @contextlib.contextmanager
    def __call__(self, name, description=None):
        what = description or name
        self._say(f"{what} ...")
        start = time.perf_counter()
        try:
            yield self
        finally:
            took = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + took
            self.peaks[name] = peak_rss_gb()
        self._say(f"{what}: {took:.1f} s")

    def metrics(self):
        """``seconds_{phase}`` for every phase so far, ``peak_rss_gb``, and
        ``peak_rss_gb_{phase}``: the process's peak when that phase ended (a running
        maximum, so the first phase that reaches ``peak_rss_gb`` is the one that set it)."""
        return {**{f"seconds_{k}": v for k, v in self.seconds.items()},
                "peak_rss_gb": peak_rss_gb(),
                **{f"peak_rss_gb_{k}": v for k, v in self.peaks.items()}}
