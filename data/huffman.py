"""The Huffman tree over item counts used by hierarchical softmax (word2vec.c's
CreateBinaryTree; Morin & Bengio 2005, Mikolov et al. 2013).

Every item is a leaf; each of the N − 1 inner nodes has a vector θ_n. The path from the
root to leaf w visits inner nodes points[w, :L_w] and turns by codes[w, :L_w] ∈ {0, 1}:

    P(w | u) = Π_{j < L_w} σ((1 − 2·code_j) · <u, θ_{point_j}>)

which sums to 1 over the leaves because σ(x) + σ(−x) = 1 at each inner node. Frequent
items get short codes, so the expected path length is the entropy of the counts.

The construction is word2vec.c's CreateBinaryTree, tie-breaks included: the leaves sorted
by count descending (stably, so a vocabulary already in that order — word2vec.c's and
data/vocab.py's — keeps it), and a two-pointer merge: pointer 1 walks the leaves from the
rarest up, pointer 2 the inner nodes in creation order (their counts never decrease); each
of the two picks of a merge takes the leaf only if its count is strictly smaller than the
inner node's (a tie goes to the inner node). The first pick gets code 0, the second code 1;
inner node a is the a-th merge, so the root is N − 2. Many Huffman trees are optimal for
counts with ties; this is the one word2vec.c (and gensim, which ports it) builds.
"""

import numpy as np


class HuffmanTree:
    """Codes and inner-node paths of a Huffman tree built from ``counts``.

    Attributes:
      num_leaves: N.
      num_inner: N − 1 (inner node ids are 0 .. N − 2; the root is N − 2).
      points: [N, max_len] int32 inner-node ids along each path from the root (0-padded).
      codes: [N, max_len] float32 turns (0-padded).
      lengths: [N] int32 path lengths.
    """

    def __init__(self, counts):
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim != 1 or counts.size < 2:
            raise ValueError(f"counts must be 1-D with at least 2 items, got shape {counts.shape}")
        if np.any(counts < 0) or not np.all(np.isfinite(counts)):
            raise ValueError("counts must be finite and >= 0")
        n = counts.size
        self.num_leaves = n
        self.num_inner = n - 1
        # word2vec.c: count[] holds the leaves by count descending, then the inner nodes
        # (1e15 until made); pos1 walks the leaves from the rarest, pos2 the inner nodes.
        order = np.argsort(-counts, kind="stable")          # position -> leaf id
        count = np.concatenate([counts[order], np.full(n, np.inf)])
        parent = np.zeros(2 * n - 1, dtype=np.int64)         # by position (leaves) / node
        turn = np.zeros(2 * n - 1, dtype=np.int8)
        pos1, pos2 = n - 1, n
        for a in range(n - 1):
            picks = []
            for _ in range(2):
                if pos1 >= 0 and count[pos1] < count[pos2]:
                    picks.append(pos1)
                    pos1 -= 1
                else:
                    picks.append(pos2)
                    pos2 += 1
            count[n + a] = count[picks[0]] + count[picks[1]]
            parent[picks[0]], parent[picks[1]] = n + a, n + a
            turn[picks[1]] = 1
        # Back from positions to leaf ids: leaf order[j] sits at position j.
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        root = 2 * n - 2
        paths, turns = [], []
        for leaf in range(n):
            nodes, bits, node = [], [], int(position[leaf])
            while node != root:
                nodes.append(parent[node] - n)
                bits.append(turn[node])
                node = parent[node]
            paths.append(nodes[::-1])
            turns.append(bits[::-1])
        self.lengths = np.array([len(p) for p in paths], dtype=np.int32)
        max_len = int(self.lengths.max())
        self.points = np.zeros((n, max_len), dtype=np.int32)
        self.codes = np.zeros((n, max_len), dtype=np.float32)
        for leaf in range(n):
            self.points[leaf, : self.lengths[leaf]] = paths[leaf]
            self.codes[leaf, : self.lengths[leaf]] = turns[leaf]
