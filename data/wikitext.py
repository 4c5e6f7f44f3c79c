"""Plain text out of a MediaWiki XML dump: markup stripped, tokenised, one paragraph a line.

The markup filter is a short list of regular expressions in the spirit of the classic
wikiextractor / gensim ``filter_wiki`` (comments, <ref>s, templates, tables, file and
category links dropped; ``[[target|label]]`` → label; ``[url label]`` → label); it is
ours, and it is only as clever as a word2vec corpus needs. Tokens are runs of letters
(no digits or underscores), lower-cased, 2 to 15 characters long, as gensim's
``WikiCorpus`` tokeniser keeps them.
"""

import bz2
import html
import re
import xml.etree.ElementTree as ET

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|[^{}]*?\|\}", re.S)
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category|Media|[a-z]{2,3}(?:-[a-z]+)?):"
                        r"[^\[\]]*(?:\[\[[^\[\]]*\]\][^\[\]]*)*\]\]", re.I)
_LINK = re.compile(r"\[\[(?:[^\[\]|]*\|)?([^\[\]]*)\]\]")
_EXT_LINK = re.compile(r"\[(?:https?|ftp)://[^\s\]]*\s?([^\]]*)\]")
_URL = re.compile(r"(?:https?|ftp)://\S+")
_TAG = re.compile(r"<[^>]*>")
_TOKEN = re.compile(r"[^\W\d_]+")


def strip_markup(text):
    """Wikitext → plain text (markup removed, link labels kept)."""
    text = _COMMENT.sub(" ", text)
    text = html.unescape(text)
    text = _REF.sub(" ", text)
    for _ in range(8):  # nested templates and tables: peel one level per pass
        new = _TABLE.sub(" ", _TEMPLATE.sub(" ", text))
        if new == text:
            break
        text = new
    text = _FILE_LINK.sub(" ", text)
    text = _LINK.sub(r"\1", text)
    text = _EXT_LINK.sub(r"\1", text)
    text = _URL.sub(" ", text)
    text = _TAG.sub(" ", text)
    return text


def tokenize(text, min_len=2, max_len=15):
    """Lower-cased runs of letters, ``min_len`` to ``max_len`` characters long."""
    return [t for t in _TOKEN.findall(text.lower()) if min_len <= len(t) <= max_len]


def iter_articles(path):
    """Yields (title, wikitext) of the main-namespace, non-redirect pages of a dump (.xml or .bz2)."""
    opener = bz2.open if path.endswith(".bz2") else open
    with opener(path, "rb") as f:
        title, ns, redirect = None, None, False
        for _, elem in ET.iterparse(f, events=("end",)):
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "title":
                title = elem.text
            elif tag == "ns":
                ns = elem.text
            elif tag == "redirect":
                redirect = True
            elif tag == "text":
                text = elem.text or ""
                if ns == "0" and not redirect and not text.lstrip().upper().startswith("#REDIRECT"):
                    yield title, text
            elif tag == "page":
                title, ns, redirect = None, None, False
                elem.clear()


def dump_sentences(path, min_tokens=2):
    """Yields token lists, one per paragraph of every article of the dump at ``path``."""
    for _, text in iter_articles(path):
        for paragraph in strip_markup(text).split("\n"):
            tokens = tokenize(paragraph)
            if len(tokens) >= min_tokens:
                yield tokens
