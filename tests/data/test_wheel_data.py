"""twotower.data.wheel_data: a member read from an installed package or a cached wheel."""

import zipfile

import pytest

from twotower.data import wheel_data


def test_member_from_cached_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("TWOTOWER_DATA", str(tmp_path))
    folder = tmp_path / "wheels" / "nopkg-1.0"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "nopkg-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("nopkg/data/x.txt", "hello")
    path = wheel_data.wheel_member("nopkg", "1.0", "nopkg/data/x.txt")
    assert open(path).read() == "hello"
    with pytest.raises(FileNotFoundError, match="'nopkg/data/y.txt' is not in nopkg-1.0"):
        wheel_data.wheel_member("nopkg", "1.0", "nopkg/data/y.txt")


def test_installed_gensim_road():
    pytest.importorskip("gensim")
    path = wheel_data.gensim_test_data("wordsim353.tsv")
    assert open(path).readline().startswith("# The WordSimilarity-353")
