"""twotower.data.text_corpus: plain text, non-UTF-8, the download road with a checksum."""

import os
import zipfile

import pytest

from twotower.data import text_corpus
from twotower.data.text_corpus import download, load_corpus, read_sentences


def test_lines_and_token_stream(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("the cat sat\n\n a dog  ran far away \n")
    assert read_sentences(str(p)) == [["the", "cat", "sat"], ["a", "dog", "ran", "far", "away"]]
    # one long line (text8) is cut into pieces
    assert read_sentences(str(p), max_sentence_length=2)[2:] == [["a", "dog"], ["ran", "far"],
                                                                 ["away"]]


def test_non_utf8_is_refused_or_replaced(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"good line\nbad \xff\xfe line\n")
    with pytest.raises(ValueError, match=r"not UTF-8: byte offset 14"):
        read_sentences(str(p))
    assert read_sentences(str(p), encoding_errors="replace")[1] == ["bad", "\ufffd\ufffd", "line"]


def test_missing_and_unknown_corpus(tmp_path):
    with pytest.raises(ValueError, match="corpus must be 'text8', 'enwiki-sample' or an "
                                         "existing file, got 'nope.txt'"):
        load_corpus("nope.txt")


def test_download_caches_and_checks(tmp_path):
    src = tmp_path / "src.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("text8", "anarchism originated as a term")
    url = src.as_uri()
    cache = tmp_path / "cache"
    cache.mkdir()
    path = download(url, "t.zip", folder=str(cache))
    assert os.path.isfile(path) and os.path.isfile(path + ".sha256")
    assert download(url, "t.zip", folder=str(cache)) == path          # cached
    with open(path, "ab") as f:                                        # corrupt the cache
        f.write(b"x")
    with pytest.raises(ValueError, match="checksum mismatch"):
        download(url, "t.zip", folder=str(cache))
    with pytest.raises(ValueError, match="expected 5 bytes"):
        download(url, "u.zip", folder=str(cache), expected_bytes=5)
    assert not os.path.exists(cache / "u.zip")                         # nothing half written


def test_text8_road_reads_the_zip(tmp_path, monkeypatch):
    src = tmp_path / "text8.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("text8", " anarchism originated as a term of abuse")
    monkeypatch.setenv("TWOTOWER_DATA", str(tmp_path / "data"))
    sentences = text_corpus.text8(url=src.as_uri(), max_sentence_length=4)
    assert sentences == [["anarchism", "originated", "as", "a"], ["term", "of", "abuse"]]


def test_tokenize_lowercases_and_strips_punctuation_at_the_ends():
    line = 'The "Liability." of (software, -- don\'t e-mail New_York 3D!'
    assert text_corpus.tokenize(line) == line.split()               # off: the raw split
    assert text_corpus.tokenize(line, lowercase=True, strip_punctuation=True) == [
        "the", "liability", "of", "software", "don't", "e-mail", "new_york", "3d"]
    assert text_corpus.tokenize(line, strip_punctuation=True)[:2] == ["The", "Liability"]


def test_read_sentences_applies_the_tokenisation(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("Software, Liability.\n...\nsoftware liability\n")
    # one word each, whatever the case and punctuation; a line of punctuation only is empty
    assert read_sentences(str(p), lowercase=True, strip_punctuation=True) == [
        ["software", "liability"], ["software", "liability"]]
    assert read_sentences(str(p)) == [["Software,", "Liability."], ["..."],
                                      ["software", "liability"]]
