"""The Huffman tree over item counts used by hierarchical softmax (word2vec.c's
CreateBinaryTree; Morin & Bengio 2005, Mikolov et al. 2013).

Every item is a leaf; each of the N − 1 inner nodes has a vector θ_n. The path from the
root to leaf w visits inner nodes points[w, :L_w] and turns by codes[w, :L_w] ∈ {0, 1}:

    P(w | u) = Π_{j < L_w} σ((1 − 2·code_j) · <u, θ_{point_j}>)

which sums to 1 over the leaves because σ(x) + σ(−x) = 1 at each inner node. Frequent
items get short codes, so the expected path length is the entropy of the counts.
"""

import heapq

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
        # Heap of (count, tiebreak, node); leaves are 0..n-1, inner nodes n..2n-2.
        heap = [(c, i, i) for i, c in enumerate(counts)]
        heapq.heapify(heap)
        parent = np.zeros(2 * n - 1, dtype=np.int64)
        turn = np.zeros(2 * n - 1, dtype=np.int8)
        next_node = n
        while len(heap) > 1:
            c1, _, a = heapq.heappop(heap)
            c2, _, b = heapq.heappop(heap)
            parent[a], turn[a] = next_node, 0
            parent[b], turn[b] = next_node, 1
            heapq.heappush(heap, (c1 + c2, next_node, next_node))
            next_node += 1
        root = 2 * n - 2
        paths, turns = [], []
        for leaf in range(n):
            nodes, bits, node = [], [], leaf
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
