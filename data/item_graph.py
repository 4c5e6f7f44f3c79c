"""A weighted directed item graph from sessions, and random walks over it.

EGES (Wang et al., "Billion-scale Commodity Embedding for E-commerce Recommendation in
Alibaba", KDD 2018) builds a directed graph whose edge i → j is weighted by how often j
directly follows i in a user's session, then samples walks with

    P(v_{t+1} = j | v_t = i) = w_ij / Σ_k w_ik                       (weighted walk)

and trains skip-gram on the walks. DeepWalk (Perozzi et al., KDD 2014) walks uniformly
over the out-neighbours instead: P(j | i) = 1 / outdeg(i) (``weighted=False``).

Walks are drawn for all walkers at once: each node's out-edges occupy one slice of a CSR
array whose cumulative weights let one ``searchsorted`` per step pick every walker's next
node. A walk that reaches a node with no out-edges stops there (it is shorter); nodes
with no edges at all (isolated) start no walk and are reported in ``isolated``.
"""

import numpy as np


class ItemGraph:
    """CSR adjacency of a weighted directed graph over items [0, num_items).

    Args:
      sessions: iterable of item-id sequences; consecutive distinct items i, j add 1 to w_ij.
      num_items: size of the id space (ids outside it are an error).
    """

    def __init__(self, sessions, num_items):
        if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)) or num_items < 1:
            raise ValueError(f"num_items must be an int >= 1, got {num_items!r}")
        self.num_items = int(num_items)
        src, dst = [], []
        for s, session in enumerate(sessions):
            seq = np.asarray(session, dtype=np.int64)
            if seq.ndim != 1:
                raise ValueError(f"session {s} must be a 1-D sequence of item ids, got shape "
                                 f"{seq.shape}")
            if seq.size and (seq.min() < 0 or seq.max() >= self.num_items):
                bad = seq[(seq < 0) | (seq >= self.num_items)][0]
                raise ValueError(f"session {s} has item id {bad}, outside [0, num_items="
                                 f"{self.num_items})")
            keep = seq[1:] != seq[:-1]
            src.append(seq[:-1][keep])
            dst.append(seq[1:][keep])
        src = np.concatenate(src) if src else np.zeros(0, np.int64)
        dst = np.concatenate(dst) if dst else np.zeros(0, np.int64)
        if src.size == 0:
            raise ValueError("sessions give no edges: every session has fewer than 2 distinct "
                             "consecutive items")
        edge_id, weights = np.unique(src * self.num_items + dst, return_counts=True)
        self.sources = edge_id // self.num_items
        self.targets = edge_id % self.num_items
        self.weights = weights.astype(np.float64)
        self.indptr = np.zeros(self.num_items + 1, dtype=np.int64)
        np.add.at(self.indptr, self.sources + 1, 1)
        self.indptr = np.cumsum(self.indptr)
        self.out_degree = np.diff(self.indptr)
        in_degree = np.bincount(self.targets, minlength=self.num_items)
        self.isolated = np.flatnonzero((self.out_degree == 0) & (in_degree == 0))

    @property
    def num_edges(self):
        return int(self.targets.size)

    def transition_probabilities(self, node, weighted=True):
        """(out-neighbours, probabilities) of one node."""
        lo, hi = self.indptr[node], self.indptr[node + 1]
        w = self.weights[lo:hi] if weighted else np.ones(hi - lo)
        return self.targets[lo:hi], w / w.sum() if hi > lo else w

    def random_walks(self, walk_length, walks_per_node=1, *, weighted=True, seed=None,
                     start_nodes=None):
        """Walks as a list of int64 arrays (length <= walk_length; dead ends stop early).

        Args:
          walk_length: nodes per walk, >= 2.
          walks_per_node: walks started from every node that has an out-edge.
          weighted: EGES's weighted walk (True) or DeepWalk's uniform walk (False).
          seed: numpy seed.
          start_nodes: override where walks start (default: every node with out-edges).
        """
        if isinstance(walk_length, bool) or not isinstance(walk_length, (int, np.integer)) or walk_length < 2:
            raise ValueError(f"walk_length must be an int >= 2, got {walk_length!r}")
        if isinstance(walks_per_node, bool) or not isinstance(walks_per_node, (int, np.integer)) or walks_per_node < 1:
            raise ValueError(f"walks_per_node must be an int >= 1, got {walks_per_node!r}")
        rng = np.random.default_rng(seed)
        if start_nodes is None:
            start_nodes = np.flatnonzero(self.out_degree > 0)
        start = np.repeat(np.asarray(start_nodes, dtype=np.int64), walks_per_node)
        rng.shuffle(start)
        w = self.weights if weighted else np.ones_like(self.weights)
        cum = np.cumsum(w)
        row_start = np.concatenate([[0.0], cum])[self.indptr[:-1]]
        row_total = np.concatenate([[0.0], cum])[self.indptr[1:]] - row_start
        walks = np.full((start.size, walk_length), -1, dtype=np.int64)
        walks[:, 0] = start
        alive = self.out_degree[start] > 0
        current = start.copy()
        for t in range(1, walk_length):
            idx = np.flatnonzero(alive)
            if idx.size == 0:
                break
            node = current[idx]
            target = row_start[node] + rng.random(idx.size) * row_total[node]
            edge = np.searchsorted(cum, target, side="right")
            # guard the right edge of a row against rounding
            edge = np.minimum(edge, self.indptr[node + 1] - 1)
            nxt = self.targets[edge]
            walks[idx, t] = nxt
            current[idx] = nxt
            alive[idx] = self.out_degree[nxt] > 0
        return [row[row >= 0] for row in walks]
