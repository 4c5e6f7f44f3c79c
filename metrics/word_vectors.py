"""Intrinsic evaluation of word vectors: word-pair similarity and 3CosAdd analogies.

* Similarity (WordSim-353, Finkelstein et al. 2002; SimLex-999, Hill et al. 2015):
  Spearman's ρ between human scores and cos(u_a, u_b) over the pairs whose two words are
  in the vocabulary.
* Analogy (Mikolov et al. 2013, questions-words.txt): for "a b c d", the answer is
  argmax_{w ∉ {a,b,c}} cos(u_w, û_b − û_a + û_c) over unit vectors û (3CosAdd); accuracy is
  over the questions whose four words are in the vocabulary, and that count is reported.

Words are looked up as written, then lower-cased. The files are the ones gensim ships in
its test_data (read through data/wheel_data.py); the evaluation code is ours.

On a small corpus few pairs or questions are in the vocabulary, and a Spearman ρ over 4
pairs (often ±1.0) says nothing: :func:`split_by_support` keeps a score in the headline
only when at least ``MIN_SUPPORT`` (20) pairs / questions took part, and marks the others
as too few, with their count.
"""

import numpy as np

from twotower.data.wheel_data import gensim_test_data

WS353 = "wordsim353.tsv"
SIMLEX = "simlex999.txt"
ANALOGIES = "questions-words.txt"

# Fewest word pairs (similarity) or questions (analogy) for a score to be reported as a
# headline: with n = 20, a Spearman ρ of 0.45 is just significant at 5% (two-sided).
MIN_SUPPORT = 20

# score key -> the key of the count of items it was computed on
SUPPORT_KEYS = {"ws353_spearman": "ws353_pairs", "simlex_spearman": "simlex_pairs",
                "analogy_accuracy": "analogy_in_vocab"}


def spearman(x, y):
    """Spearman's rank correlation (average ranks for ties) of two 1-D arrays."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) != len(y) or len(x) < 2:
        return float("nan")

    def ranks(a):
        order = np.argsort(a, kind="mergesort")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=np.float64)
        _, inv, cnt = np.unique(a, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return (sums / cnt)[inv]

    rx, ry = ranks(x), ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def read_word_pairs(path):
    """Lines "word1<TAB>word2<TAB>score" ('#' comments skipped) → list of (w1, w2, score)."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split()
            pairs.append((parts[0], parts[1], float(parts[2])))
    return pairs


def read_analogies(path):
    """questions-words.txt → list of (section, a, b, c, d)."""
    questions, section = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(":"):
                section = line[1:].strip()
            elif line.strip():
                a, b, c, d = line.split()
                questions.append((section, a, b, c, d))
    return questions


def _lookup(index, word):
    i = index.get(word)
    return index.get(word.lower()) if i is None else i


def _unit(vectors):
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def word_similarity(words, vectors, pairs):
    """Returns (spearman ρ, pairs used, pairs skipped as out of vocabulary)."""
    index = {w: i for i, w in enumerate(words)}
    unit = _unit(vectors)
    sims, gold = [], []
    for a, b, score in pairs:
        ia, ib = _lookup(index, a), _lookup(index, b)
        if ia is None or ib is None:
            continue
        sims.append(float(unit[ia] @ unit[ib]))
        gold.append(score)
    return spearman(sims, gold), len(sims), len(pairs) - len(sims)


def analogy_accuracy(words, vectors, questions, *, restrict_vocab=300000, chunk=512):
    """3CosAdd accuracy. Returns (accuracy in [0, 1], questions in vocabulary, total).

    ``restrict_vocab``: only the first (most frequent) ids take part, as gensim's default.
    """
    words = list(words)[:restrict_vocab]
    index = {w: i for i, w in enumerate(words)}
    unit = _unit(np.asarray(vectors)[:len(words)])
    rows = []
    for _, a, b, c, d in questions:
        ids = [_lookup(index, w) for w in (a, b, c, d)]
        if None not in ids:
            rows.append(ids)
    if not rows:
        return float("nan"), 0, len(questions)
    q = np.asarray(rows, np.int64)
    correct = 0
    for start in range(0, len(q), chunk):
        part = q[start:start + chunk]
        target = unit[part[:, 1]] - unit[part[:, 0]] + unit[part[:, 2]]
        sims = target @ unit.T
        r = np.arange(len(part))
        for col in range(3):
            sims[r, part[:, col]] = -np.inf
        correct += int((sims.argmax(axis=1) == part[:, 3]).sum())
    return correct / len(q), len(q), len(questions)


def evaluate_word_vectors(words, vectors):
    """WS353 ρ, SimLex ρ and analogy accuracy (gensim's test files) as a flat dict."""
    ws_rho, ws_n, _ = word_similarity(words, vectors, read_word_pairs(gensim_test_data(WS353)))
    sl_rho, sl_n, _ = word_similarity(words, vectors, read_word_pairs(gensim_test_data(SIMLEX)))
    acc, n_in, n_all = analogy_accuracy(words, vectors, read_analogies(gensim_test_data(ANALOGIES)))
    return {"ws353_spearman": ws_rho, "ws353_pairs": ws_n,
            "simlex_spearman": sl_rho, "simlex_pairs": sl_n,
            "analogy_accuracy": acc, "analogy_in_vocab": n_in, "analogy_total": n_all}


def split_by_support(results, min_support=MIN_SUPPORT):
    """Splits :func:`evaluate_word_vectors`'s results by how many items each score rests on.

    Returns (headline, too_few, not_computed): headline = the counts, and every score with
    at least ``min_support`` pairs / questions; too_few = {score key: (value, count)} for
    scores on 1..min_support-1 items (or a NaN score, e.g. ρ of constant values, with
    items); not_computed = score keys with no item in the vocabulary.
    """
    if isinstance(min_support, bool) or not isinstance(min_support, int) or min_support < 1:
        raise ValueError(f"min_support must be an int >= 1, got {min_support!r}")
    headline, too_few, not_computed = {}, {}, []
    for key, value in results.items():
        if key not in SUPPORT_KEYS:
            headline[key] = value
            continue
        count = int(results.get(SUPPORT_KEYS[key], 0))
        if count == 0:
            not_computed.append(key)
        elif count < min_support or np.isnan(value):
            too_few[key] = (value, count)
        else:
            headline[key] = value
    return headline, too_few, not_computed
