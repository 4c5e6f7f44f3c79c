"""twotower.data.huffman: word2vec.c's Huffman tree, tie-breaks included."""

import numpy as np
import pytest

from twotower.data.huffman import HuffmanTree


def word2vec_c_tree(cn):
    """A line-by-line port of word2vec.c's CreateBinaryTree (vocab sorted by count
    descending): returns (codes, points) as lists per word, as vocab[a].code / .point."""
    vocab_size = len(cn)
    count = list(cn) + [1e15] * vocab_size
    binary = [0] * (2 * vocab_size)
    parent_node = [0] * (2 * vocab_size)
    pos1, pos2 = vocab_size - 1, vocab_size
    for a in range(vocab_size - 1):
        if pos1 >= 0:
            if count[pos1] < count[pos2]:
                min1i, pos1 = pos1, pos1 - 1
            else:
                min1i, pos2 = pos2, pos2 + 1
        else:
            min1i, pos2 = pos2, pos2 + 1
        if pos1 >= 0:
            if count[pos1] < count[pos2]:
                min2i, pos1 = pos1, pos1 - 1
            else:
                min2i, pos2 = pos2, pos2 + 1
        else:
            min2i, pos2 = pos2, pos2 + 1
        count[vocab_size + a] = count[min1i] + count[min2i]
        parent_node[min1i] = vocab_size + a
        parent_node[min2i] = vocab_size + a
        binary[min2i] = 1
    codes, points = [], []
    for a in range(vocab_size):
        b, code, point = a, [], []
        while True:
            code.append(binary[b])
            point.append(b)
            b = parent_node[b]
            if b == vocab_size * 2 - 2:
                break
        i = len(code)
        word_code, word_point = [0] * i, [0] * (i + 1)
        word_point[0] = vocab_size - 2
        for j in range(i):
            word_code[i - j - 1] = code[j]
            word_point[i - j] = point[j] - vocab_size
        codes.append(word_code)
        points.append(word_point[:i])
    return codes, points


def paths(tree):
    return ([tree.codes[w, :n].astype(int).tolist() for w, n in enumerate(tree.lengths)],
            [tree.points[w, :n].tolist() for w, n in enumerate(tree.lengths)])


def test_hand_built_tree_with_ties():
    # counts 4, 2, 2, 1, 1 traced by hand through word2vec.c: the tie 2 (leaf) vs 2
    # (inner node of the two 1s) goes to the inner node, so the tree is a chain
    # (lengths 1, 2, 3, 4, 4); a heap that breaks ties by id would merge the two 2s first.
    tree = HuffmanTree([4, 2, 2, 1, 1])
    codes, points = paths(tree)
    assert tree.lengths.tolist() == [1, 2, 3, 4, 4]
    assert codes == [[0], [1, 0], [1, 1, 1], [1, 1, 0, 1], [1, 1, 0, 0]]
    assert points == [[3], [3, 2], [3, 2, 1], [3, 2, 1, 0], [3, 2, 1, 0]]


@pytest.mark.parametrize("seed", range(6))
def test_matches_word2vec_c_on_small_vocabularies_with_ties(seed):
    rng = np.random.default_rng(seed)
    counts = np.sort(rng.integers(1, 6, size=int(rng.integers(2, 40))))[::-1]
    assert paths(HuffmanTree(counts)) == word2vec_c_tree(counts.tolist())


def test_unsorted_counts_get_the_tree_of_their_sorted_order():
    counts = np.array([1, 4, 2, 1, 2])
    order = np.argsort(-counts, kind="stable")          # [1, 2, 4, 0, 3]
    ref_codes, ref_points = word2vec_c_tree(counts[order].tolist())
    codes, points = paths(HuffmanTree(counts))
    for position, leaf in enumerate(order):
        assert codes[leaf] == ref_codes[position] and points[leaf] == ref_points[position]


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="at least 2 items"):
        HuffmanTree([3])
    with pytest.raises(ValueError, match="finite and >= 0"):
        HuffmanTree([3, -1])
