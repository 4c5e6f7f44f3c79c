"""twotower/cli.py: bad input ends a command with one line on stderr and exit status 2."""

import os
import subprocess
import sys
import types
import zipfile

import pytest

from twotower import cli

ONE_LINE_ERRORS = [
    ValueError("dim must be an int >= 1, got 0"),
    FileNotFoundError(2, "No such file or directory", "/no/such/ratings.csv"),
    FileExistsError(17, "File exists", "/tmp/x"),
    PermissionError(13, "Permission denied", "/root/secret"),
    IsADirectoryError(21, "Is a directory", "/tmp"),
    UnicodeDecodeError("utf-8", b"ab\xffcd", 2, 3, "invalid start byte"),
    zipfile.BadZipFile("File is not a zip file"),
]


@pytest.fixture
def boom(monkeypatch):
    """A `twotower boom` command whose main raises the error it is given."""
    module = types.ModuleType("twotower_test_boom")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "boom", (module.__name__, "raises"))
    monkeypatch.delenv("TWOTOWER_DEBUG", raising=False)

    def arm(error):
        def main(argv):
            raise error
        module.main = main
    return arm


@pytest.mark.parametrize("error", ONE_LINE_ERRORS, ids=lambda e: type(e).__name__)
def test_input_errors_are_one_line_and_exit_2(boom, capsys, error):
    boom(error)
    assert cli.main(["boom", "--x"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("twotower boom: error: "), captured.err
    assert "Traceback" not in captured.err


def test_messages_name_the_file_and_the_byte(boom, capsys):
    boom(FileNotFoundError(2, "No such file or directory", "/no/such/ratings.csv"))
    cli.main(["boom"])
    assert capsys.readouterr().err == ("twotower boom: error: No such file or directory: "
                                       "'/no/such/ratings.csv'\n")
    boom(UnicodeDecodeError("utf-8", b"ab\xffcd", 2, 3, "invalid start byte"))
    cli.main(["boom"])
    assert "b'\\xff' at offset 2 as utf-8" in capsys.readouterr().err
    boom(ValueError("first line\n  second line"))
    cli.main(["boom"])
    assert capsys.readouterr().err == "twotower boom: error: first line second line\n"


def test_debug_reraises_for_the_traceback(boom, monkeypatch):
    boom(ValueError("bad"))
    monkeypatch.setenv("TWOTOWER_DEBUG", "1")
    with pytest.raises(ValueError, match="bad"):
        cli.main(["boom"])


def test_a_bug_is_not_disguised_as_bad_input(boom):
    boom(RuntimeError("internal"))
    with pytest.raises(RuntimeError, match="internal"):
        cli.main(["boom"])


def test_recipe_bad_values_and_paths(tmp_path, capsys):
    assert cli.main(["dssm", "--epochs", "0"]) == 2
    assert capsys.readouterr().err == ("twotower dssm: error: epochs must be an int >= 1, "
                                       "got 0\n")
    users_file = tmp_path / "notes.txt"
    users_file.write_text("mine")
    # refused before any data is loaded (the default source is never opened)
    assert cli.main(["youtube", "--out", str(users_file)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and str(users_file) in err
    assert users_file.read_text() == "mine"
    bad_zip = tmp_path / "ml.zip"
    bad_zip.write_bytes(b"not a zip")
    assert cli.main(["mns", "--data", str(bad_zip)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("twotower mns: error: ") and err.count("\n") == 1
    assert cli.main(["ebr", "--data", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_unknown_command_and_argparse_errors_exit_2(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["dssm", "--epochs", "three"])
    assert e.value.code == 2


def test_a_real_bad_call_prints_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("TWOTOWER_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "twotower.cli", "dssm", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("twotower dssm: error: --out ") and "--overwrite" in lines[0]
    assert (out / "thesis.tex").read_text() == "years of work"


def test_bare_twotower_prints_usage_and_exits_2(capsys):
    assert cli.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage: twotower COMMAND" in captured.err
    assert cli.main(["--help"]) == 0 and "commands:" in capsys.readouterr().out


def test_tensorflow_log_is_off_unless_debugging():
    """`import twotower` sets TensorFlow's C++ log level before TensorFlow loads (the
    cuInit error on a CPU machine); TWOTOWER_DEBUG=1 leaves it on; a user's own setting
    is kept."""
    code = "import os, twotower; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"

    def level(**env):
        base = {k: v for k, v in os.environ.items()
                if k not in ("TF_CPP_MIN_LOG_LEVEL", "TWOTOWER_DEBUG")}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**base, **env}, timeout=60)
        return out.stdout.strip()

    assert level() == "3"
    assert level(TWOTOWER_DEBUG="1") == "None"
    assert level(TF_CPP_MIN_LOG_LEVEL="1") == "1"


def test_native_log_noise_is_dropped_and_everything_else_passes():
    from twotower import _quiet

    noise = [b"WARNING: All log messages before absl::InitializeLog() is called are "
             b"written to STDERR\n",
             b"I0000 00:00:1796234790.699221    7416 device_compiler.h:196] Compiled "
             b"cluster using XLA!  This line is logged at most once.\n",
             b"W1202 18:01:51.769484   4085 cuda_platform.cc:51] a warning\n"]
    kept = [b"E1202 18:01:51.769484 4085 x.cc:1] a real error\n",
            b"twotower youtube: error: --epochs must be >= 1\n",
            b"tuning ScaNN:  50%|#####     | 1/2\r", b"Traceback (most recent call last):\n"]
    assert all(_quiet.is_noise(line) for line in noise)
    assert not any(_quiet.is_noise(line) for line in kept)
    read_fd, write_fd = os.pipe()
    f = _quiet._Filter(read_fd=-1, out_fd=write_fd)
    for chunk in noise + kept:
        f.feed(chunk[:7])   # lines arrive in pieces
        f.feed(chunk[7:])
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        assert r.read() == b"".join(kept)
