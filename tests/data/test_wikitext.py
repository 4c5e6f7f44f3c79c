"""twotower.data.wikitext: markup stripping, tokenising, a tiny dump."""

import bz2

from twotower.data.wikitext import dump_sentences, strip_markup, tokenize

WIKI = ("'''Anarchism''' is a [[political philosophy|philosophy]]<ref>Cite {{x}}</ref> "
        "{{Infobox|a={{nested}}}} that [[state]]s are [http://x.org harmful].<!-- hidden -->\n"
        "[[File:A.png|thumb|a [[caption]]]]\n[[Category:Stuff]]\nSee 1984 too_far &amp; x")

DUMP = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
<page><title>A</title><ns>0</ns><revision><text>{text}</text></revision></page>
<page><title>R</title><ns>0</ns><redirect title="A"/><revision><text>#REDIRECT [[A]]</text></revision></page>
<page><title>Talk:A</title><ns>1</ns><revision><text>talk page words here</text></revision></page>
</mediawiki>"""


def test_strip_and_tokenize():
    tokens = tokenize(strip_markup(WIKI))
    assert tokens == ["anarchism", "is", "philosophy", "that", "states", "are", "harmful",
                      "see", "too", "far"]


def test_dump_keeps_articles_only(tmp_path):
    from xml.sax.saxutils import escape
    p = tmp_path / "d.xml.bz2"
    p.write_bytes(bz2.compress(DUMP.format(text=escape(WIKI)).encode()))
    sentences = list(dump_sentences(str(p)))
    assert sentences == [["anarchism", "is", "philosophy", "that", "states", "are", "harmful"],
                         ["see", "too", "far"]]
