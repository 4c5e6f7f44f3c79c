"""Output folders: only twotower's own output is replaced, atomically, by one writer."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

from twotower import artifacts
from twotower.artifacts import (MARKER, OutputPathError, atomic_directory, atomic_write_json,
                                check_output_dir, exchange_paths, is_twotower_artifact)


def _write(folder, name, text="x"):
    with open(os.path.join(folder, name), "w") as f:
        f.write(text)


def test_nothing_half_written_and_our_output_replaced_whole(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            _write(tmp, "a.txt", "partial")
            raise RuntimeError("crash")
    assert not target.exists() and os.listdir(tmp_path) == []
    with atomic_directory(target) as tmp:
        atomic_write_json(os.path.join(tmp, "m.json"), {"a": 1})
    assert is_twotower_artifact(target)
    with atomic_directory(target, overwrite=True) as tmp:  # replaces the old folder whole
        _write(tmp, "b.txt", "new")
    assert sorted(os.listdir(target)) == [MARKER, "b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]          # no lock, tmp or old siblings


def test_earlier_output_needs_overwrite(tmp_path):
    with atomic_directory(tmp_path / "out") as tmp:
        _write(tmp, "a.txt")
    with pytest.raises(OutputPathError, match=r"holds an earlier twotower output.*--overwrite"):
        check_output_dir(tmp_path / "out")
    assert check_output_dir(tmp_path / "out", overwrite=True) == str(tmp_path / "out")


@pytest.mark.parametrize("overwrite", [False, True])
def test_user_folder_and_file_are_never_replaced(tmp_path, overwrite):
    _write(tmp_path, "corpus.txt", "the user's data")
    with pytest.raises(OutputPathError, match=r"non-empty folder that twotower did not write"
                       r".*--overwrite"):
        check_output_dir(tmp_path, overwrite=overwrite)
    with pytest.raises(OutputPathError, match=r"corpus.txt' is a file.*--overwrite"):
        with atomic_directory(tmp_path / "corpus.txt", overwrite=overwrite):
            pytest.fail("must not get here")
    assert open(tmp_path / "corpus.txt").read() == "the user's data"
    os.symlink(tmp_path, tmp_path / "link")
    with pytest.raises(OutputPathError, match="symbolic link"):
        check_output_dir(tmp_path / "link", overwrite=overwrite)


def test_empty_folder_and_missing_parents_are_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic_directory(tmp_path / "empty") as tmp:
        _write(tmp, "a.txt")
    assert sorted(os.listdir(tmp_path / "empty")) == [MARKER, "a.txt"]
    with atomic_directory(tmp_path / "x" / "y" / "z") as tmp:
        _write(tmp, "a.txt")
    assert (tmp_path / "x" / "y" / "z" / "a.txt").exists()


def test_unwritable_parent_is_refused_before_work(tmp_path):
    _write(tmp_path, "plain_file")
    with pytest.raises(OutputPathError, match="plain_file' is a file"):
        check_output_dir(tmp_path / "plain_file" / "out")
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(OutputPathError, match="no write permission"):
            check_output_dir(ro / "out")
    with pytest.raises(OutputPathError, match="must be a folder path"):
        check_output_dir("")


def test_a_second_writer_gets_a_clear_error(tmp_path):
    target = tmp_path / "out"
    inside, release = threading.Event(), threading.Event()
    errors = []

    def first():
        with atomic_directory(target) as tmp:
            _write(tmp, "first.txt")
            inside.set()
            release.wait(10)

    t = threading.Thread(target=first)
    t.start()
    assert inside.wait(10)
    try:
        with atomic_directory(target):
            pass
    except OutputPathError as e:
        errors.append(str(e))
    release.set()
    t.join(10)
    assert len(errors) == 1 and "another twotower process is writing it" in errors[0]
    assert sorted(os.listdir(target)) == [MARKER, "first.txt"]


def test_umask_is_respected(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "out") as tmp:
            atomic_write_json(os.path.join(tmp, "m.json"), {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "m.json").st_mode) == 0o644


def test_exchange_is_atomic_on_this_file_system(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _write(a, "in_a"), _write(b, "in_b")
    assert exchange_paths(a, b) is True
    assert os.listdir(a) == ["in_b"] and os.listdir(b) == ["in_a"]


def test_a_reader_never_finds_the_path_missing(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        _write(tmp, "v")
    stop = threading.Event()
    missing = []

    def reader():
        while not stop.is_set():
            if not os.path.isdir(target):
                missing.append(1)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for _ in range(30):
            with atomic_directory(target, overwrite=True) as tmp:
                _write(tmp, "v")
    finally:
        stop.set()
        t.join(10)
    assert missing == []


def test_leftovers_of_a_killed_save_are_cleaned_by_the_next_save(tmp_path):
    target = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, sys, time
        from twotower.artifacts import atomic_directory
        with atomic_directory({str(target)!r}) as tmp:
            open(os.path.join(tmp, "big"), "wb").write(b"0" * 100000)
            print("inside", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "inside"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    leftovers = [n for n in os.listdir(tmp_path) if n != "out"]
    assert leftovers and all(n.startswith(".out.twotower-") for n in leftovers)
    assert not target.exists()
    # legacy debris of the previous implementation is recognised too
    (tmp_path / ".tmp-out-abc").mkdir()
    (tmp_path / ".old-out-def").mkdir()
    with atomic_directory(target) as tmp:
        _write(tmp, "a")
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_index_manifest_of_earlier_versions_counts_as_ours(tmp_path):
    (tmp_path / "idx").mkdir()
    _write(tmp_path / "idx", "manifest.json", '{"format": "twotower-index/1"}')
    assert is_twotower_artifact(tmp_path / "idx")
    _write(tmp_path / "idx", "manifest.json", '[]')
    assert not is_twotower_artifact(tmp_path / "idx")
    assert artifacts.check_output_dir(tmp_path / "idx" / "new") == str(tmp_path / "idx" / "new")
