"""Text corpora for word2vec: a plain-text file, text8 by URL, the gensim Wikipedia extract.

A corpus is a list of sentences, each a list of str tokens. A plain-text file is read as
one sentence per line, tokens split on whitespace; a line longer than
``max_sentence_length`` tokens (text8 is one 17M-token line) is cut into pieces of that
length, as word2vec.c cuts at MAX_SENTENCE_LENGTH and gensim at 10,000 words.

Tokenisation of a user's file (:func:`tokenize`): whitespace splitting, then optionally
lower-casing and stripping punctuation at both ends of each token, close to gensim's
``simple_preprocess`` (which lower-cases and keeps runs of letters): ``"Liability."`` →
``liability``, ``"(software,"`` → ``software``, a token of punctuation only (``--``) is
dropped, while punctuation inside a token stays (``don't``, ``e-mail``, ``new_york``).
Unlike simple_preprocess, digits and tokens shorter than 2 or longer than 15 characters
are kept. Both are off in :func:`read_sentences` by default (the raw split); the word2vec
recipe turns them on for a file. text8 and the enwiki extract come tokenised already and
keep their own tokenisers.

Bytes that are not UTF-8 are refused by default (``encoding_errors="strict"``: a
ValueError names the file and byte offset); ``encoding_errors="replace"`` turns them into
U+FFFD instead.
"""

import os
import re
import shutil
import tempfile
import urllib.request
import zipfile

from twotower.artifacts import sha256_file
from twotower.data.wheel_data import cache_dir, gensim_test_data
from twotower.data.wikitext import dump_sentences

MAX_SENTENCE_LENGTH = 10000

TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
# text8.zip's size as TensorFlow's word2vec tutorial checked it; its sha256 is recorded
# on first download next to the cache (trust on first use) and checked on every read.
TEXT8_BYTES = 31344016

ENWIKI_MEMBER = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

# Non-word characters (anything but letters, digits and "_") at either end of a token.
_EDGE_PUNCTUATION = re.compile(r"^\W+|\W+$")


def tokenize(line, *, lowercase=False, strip_punctuation=False):
    """One line of text → tokens: split on whitespace, then (module docstring)

    Args:
      line: a str.
      lowercase: lower-case every token (``str.lower``).
      strip_punctuation: remove non-word characters (not a letter, digit or ``_``) at
        both ends of every token and drop tokens left empty; inside a token they stay.

    Returns:
      list of str.
    """
    tokens = line.lower().split() if lowercase else line.split()
    if strip_punctuation:
        tokens = [t for t in (_EDGE_PUNCTUATION.sub("", t) for t in tokens) if t]
    return tokens


def read_sentences(path, *, max_sentence_length=MAX_SENTENCE_LENGTH, encoding_errors="strict",
                   lowercase=False, strip_punctuation=False):
    """Reads a plain-text corpus: one sentence per line (or one long token stream).

    Args:
      path: a text file, UTF-8.
      max_sentence_length: longer lines are cut into pieces of this many tokens.
      encoding_errors: "strict" (refuse non-UTF-8 bytes with a ValueError) or "replace".
      lowercase: lower-case every token (:func:`tokenize`).
      strip_punctuation: strip punctuation at both ends of every token (:func:`tokenize`).

    Returns:
      list of sentences (lists of str); empty lines are skipped.
    """
    if encoding_errors not in ("strict", "replace"):
        raise ValueError(f"encoding_errors must be 'strict' or 'replace', got {encoding_errors!r}")
    if max_sentence_length < 1:
        raise ValueError(f"max_sentence_length must be >= 1, got {max_sentence_length!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"corpus file {path!r} does not exist")
    sentences = []
    with open(path, "rb") as f:
        offset = 0
        for raw in f:
            try:
                line = raw.decode("utf-8", errors=encoding_errors)
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"corpus {path!r} is not UTF-8: byte offset {offset + e.start} "
                    f"({raw[e.start:e.start + 4]!r}); re-encode it or pass "
                    f"encoding_errors='replace' (--encoding-errors replace)") from None
            offset += len(raw)
            tokens = tokenize(line, lowercase=lowercase, strip_punctuation=strip_punctuation)
            for start in range(0, len(tokens), max_sentence_length):
                sentences.append(tokens[start:start + max_sentence_length])
    return sentences


def download(url, filename, *, expected_bytes=None, expected_sha256=None, folder=None):
    """Downloads ``url`` once into the cache and checks it; returns the local path.

    The sha256 is checked against ``expected_sha256`` when given, else against the one
    recorded at first download (``<file>.sha256``), so a truncated or altered cache file
    is caught. A failed check removes nothing silently: it raises with both digests.
    """
    folder = folder or cache_dir("downloads")
    path = os.path.join(folder, filename)
    stamp = path + ".sha256"
    if not os.path.isfile(path):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{filename}-")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url) as src:
                shutil.copyfileobj(src, out)
            size = os.path.getsize(tmp)
            if expected_bytes is not None and size != expected_bytes:
                raise ValueError(f"{url!r}: expected {expected_bytes} bytes, got {size}")
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        with open(stamp, "w") as f:
            f.write(sha256_file(path) + "\n")
    digest = sha256_file(path)
    want = expected_sha256
    if want is None and os.path.isfile(stamp):
        with open(stamp) as f:
            want = f.read().strip()
    if want is not None and digest != want:
        raise ValueError(f"checksum mismatch for {path!r}: sha256 {digest}, expected {want}; "
                         f"delete the file to download it again")
    return path


def text8(*, url=TEXT8_URL, expected_sha256=None, max_sentence_length=MAX_SENTENCE_LENGTH):
    """Matt Mahoney's text8 (first 1e8 bytes of a 2006 Wikipedia, cleaned), by URL + cache."""
    zpath = download(url, "text8.zip",
                     expected_bytes=TEXT8_BYTES if url == TEXT8_URL else None,
                     expected_sha256=expected_sha256)
    txt = os.path.join(os.path.dirname(zpath), "text8")
    if not os.path.isfile(txt):
        with zipfile.ZipFile(zpath) as zf:
            name = zf.namelist()[0]
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(zpath))
            with os.fdopen(fd, "wb") as out, zf.open(name) as src:
                shutil.copyfileobj(src, out)
            os.replace(tmp, txt)
    return read_sentences(txt, max_sentence_length=max_sentence_length)


def enwiki_sample():
    """The Wikipedia extract in the gensim 4.4.0 wheel (~10k paragraphs, ~430k tokens).

    Parsed and tokenised once (data/wikitext.py), cached as one paragraph a line.
    """
    cached = os.path.join(cache_dir("corpora"), "enwiki-sample.txt")
    if not os.path.isfile(cached):
        dump = gensim_test_data(ENWIKI_MEMBER)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cached), prefix=".tmp-enwiki-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for tokens in dump_sentences(dump):
                out.write(" ".join(tokens) + "\n")
        os.replace(tmp, cached)
    return read_sentences(cached)


def load_corpus(name_or_path, **kwargs):
    """``"text8"``, ``"enwiki-sample"`` or a path to a plain-text file → list of sentences.

    ``kwargs`` (encoding_errors, lowercase, strip_punctuation, max_sentence_length) go to
    :func:`read_sentences` for a file; text8 and the enwiki extract are tokenised already
    and ignore them.
    """
    if name_or_path == "text8":
        return text8()
    if name_or_path == "enwiki-sample":
        return enwiki_sample()
    if not os.path.isfile(name_or_path):
        raise ValueError(f"corpus must be 'text8', 'enwiki-sample' or an existing file, "
                         f"got {name_or_path!r}")
    return read_sentences(name_or_path, **kwargs)
