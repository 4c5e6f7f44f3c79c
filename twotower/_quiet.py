"""Drops the C++ libraries' log noise from the CLI's stderr, keeps everything else.

TensorFlow's own C++ log obeys ``TF_CPP_MIN_LOG_LEVEL`` (set by twotower/_keras2.py), but
XLA and the libraries under it log through absl directly: "WARNING: All log messages
before absl::InitializeLog() is called are written to STDERR" and INFO lines such as
"I0000 00:00:1796234747.166701 6848 device_compiler.h:196] Compiled cluster using XLA!",
which no environment variable turns off. They are written to file descriptor 2 from C++,
past Python's ``sys.stderr``, so the only place to drop them is the descriptor itself:
:func:`filter_native_stderr` points descriptor 2 at a pipe and a thread copies the pipe
to the real stderr, leaving out absl's INFO and WARNING lines. Errors (``E...``, ``F...``)
and every other byte pass, at once, partial lines (progress bars) included.

Python has no API for this (absl-py's settings reach only Python's log), hence our own.
"""

import atexit
import os
import re
import sys
import threading

# absl's line prefix: severity, MMDD, time, thread id, file:line]
_ABSL_NOISE = re.compile(rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\n]*\] |"
                         rb"WARNING: All log messages before absl::InitializeLog\(\))")
# a partial line that may still turn out to be one of those: held until it ends
_MAYBE_NOISE = re.compile(rb"^(?:[IW]\d{0,4}(?: [\d:. ]*)?(?:\d+ [^\]\n]*)?|W[A-Z: ]*)$")


_installed = False


def is_noise(line):
    """Whether one stderr line (bytes, with or without its newline) is absl INFO/WARNING
    noise from the C++ libraries."""
    return bool(_ABSL_NOISE.match(line))


class _Filter:
    def __init__(self, read_fd, out_fd):
        self.read_fd, self.out_fd = read_fd, out_fd
        self.pending = b""

    def feed(self, chunk):
        """Writes what of ``chunk`` is not noise; holds a partial line that may be."""
        data = self.pending + chunk
        self.pending = b""
        out = []
        for line in data.splitlines(keepends=True):
            if line.endswith((b"\n", b"\r")):
                if not is_noise(line):
                    out.append(line)
            elif _MAYBE_NOISE.match(line) and not is_noise(line):
                self.pending = line
            elif not is_noise(line):
                out.append(line)
            else:
                self.pending = line  # noise whose newline is still to come
        if out:
            os.write(self.out_fd, b"".join(out))

    def run(self):
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.feed(chunk)
        if self.pending and not is_noise(self.pending):
            os.write(self.out_fd, self.pending)
        os.close(self.read_fd)


def filter_native_stderr():
    """Routes file descriptor 2 through the noise filter for the rest of the process;
    restored, and the pipe drained, at exit (a traceback printed at exit still shows).
    Does nothing when stderr has no file descriptor (an embedding host), and on a
    second call: one filter a process."""
    global _installed
    if _installed:
        return
    try:
        real = os.dup(2)
    except OSError:
        return
    read_fd, write_fd = os.pipe()
    sys.stderr.flush()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    f = _Filter(read_fd, real)
    thread = threading.Thread(target=f.run, name="twotower-stderr-filter", daemon=True)
    thread.start()

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)  # closes the pipe's last write end: the thread reads to EOF
        thread.join(timeout=5)

    atexit.register(restore)
    _installed = True
