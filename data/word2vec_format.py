"""word2vec's text vector format (word2vec.c ``-binary 0``; gensim's
KeyedVectors.load_word2vec_format reads it): a "V d" header line, then one
"word v_1 … v_d" line per word. Words must not contain whitespace.
"""


def write_word2vec_text(path, words, vectors):
    """Writes ``words`` (V strings) and ``vectors`` ([V, d]) to ``path`` in the text format."""
    if len(words) != len(vectors):
        raise ValueError(f"words and vectors must have one row each, got {len(words)} words "
                         f"and {len(vectors)} vectors")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, row in zip(words, vectors):
            f.write(word + " " + " ".join(f"{x:.6f}" for x in row) + "\n")
