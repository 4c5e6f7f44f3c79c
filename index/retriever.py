"""User-to-item and item-to-item retrieval over a ScaNN index of the item tower.

u2i:  u = f(query features);  top-k_{i ∉ seen} <u, v_i>           (Covington et al. 2016)
i2i:  v = g(item) or the indexed v_item;  top-k_{i ≠ item} <v, v_i> (item2vec, Barkan &
      Koenigstein 2016)

with cosine meaning both sides L2-normalised (the index normalises; see ScannIndex).
"""

import numpy as np

from twotower.index.builder import embed


class Retriever:
    """Query tower + item tower + :class:`~twotower.index.scann_index.ScannIndex`.

    Args:
      index: the ScannIndex over the item embeddings.
      query_tower: callable mapping query features to embeddings [B, d] (optional: without
        it, u2i takes embeddings only).
      item_tower: callable mapping item features/ids to embeddings (optional: i2i by
        indexed id needs none; i2i by features needs it).
      user_table: optional dict of equal-length arrays, one row per user, with a
        ``"user_id"`` column: the query tower's inputs for each user (a feature store),
        so that u2i can be asked by user id.
      user_seen: optional dict user id -> item ids that user has seen (excluded by
        :meth:`u2i_users` unless told otherwise).
    """

    def __init__(self, index, query_tower=None, item_tower=None, *, user_table=None,
                 user_seen=None):
        self.index = index
        self.query_tower = query_tower
        self.item_tower = item_tower
        self.user_table = None
        self._user_rows = None
        if user_table is not None:
            if "user_id" not in user_table:
                raise ValueError(f"user_table needs a 'user_id' column, got {sorted(user_table)}")
            n = len(user_table["user_id"])
            bad = {k: len(v) for k, v in user_table.items() if len(v) != n}
            if bad:
                raise ValueError(f"user_table columns must have {n} rows, got {bad}")
            self.user_table = {k: np.asarray(v) for k, v in user_table.items()}
            self._user_rows = {int(u): r for r, u in enumerate(self.user_table["user_id"])}
        self.user_seen = ({int(u): np.asarray(v, dtype=np.int64) for u, v in user_seen.items()}
                          if user_seen is not None else None)

    @staticmethod
    def _check_k(k, limit):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= limit:
            raise ValueError(f"k must be an int in [1, {limit}], got {k!r}")

    def embed_queries(self, query_features, *, batch_size=4096):
        if self.query_tower is None:
            raise ValueError("this Retriever has no query_tower: pass query embeddings "
                             "to u2i_embeddings instead")
        return embed(self.query_tower, query_features, batch_size=batch_size,
                     desc="embedding queries", progress=False)

    def u2i(self, query_features, k=10, *, exclude=None):
        """Top-k item ids and scores for each query (features through the query tower).

        Args:
          query_features: what the query tower takes, batched [B, ...] (array or dict).
          k: results per query.
          exclude: optional B iterables of item ids to leave out (e.g. items seen).

        Returns:
          (item_ids int64 [B, k], scores float32 [B, k]).
        """
        self._check_k(k, self.index.size)
        return self.u2i_embeddings(self.embed_queries(query_features), k, exclude=exclude)

    def u2i_users(self, user_ids, k=10, *, exclude_seen=True, exclude=None):
        """u2i for known users: their row of ``user_table`` through the query tower,
        excluding the items in ``user_seen`` (when ``exclude_seen``) and ``exclude``."""
        if self.user_table is None:
            raise ValueError("this Retriever has no user_table: pass query features to u2i")
        users = np.asarray(user_ids).reshape(-1)
        rows = []
        for u in users.tolist():
            r = self._user_rows.get(int(u))
            if r is None:
                raise ValueError(f"unknown user id {u!r} ({len(self._user_rows)} users known)")
            rows.append(r)
        features = {name: col[rows] for name, col in self.user_table.items()}
        ex = [[] for _ in rows] if exclude is None else [list(np.asarray(e).reshape(-1))
                                                         for e in exclude]
        if len(ex) != len(rows):
            raise ValueError(f"exclude must have one entry per user ({len(rows)}), got {len(ex)}")
        if exclude_seen and self.user_seen is not None:
            ex = [e + self.user_seen.get(int(u), np.zeros(0, np.int64)).tolist()
                  for e, u in zip(ex, users.tolist())]
        return self.u2i(features, k, exclude=ex)

    def u2i_embeddings(self, query_embeddings, k=10, *, exclude=None):
        """As :meth:`u2i`, from query embeddings [B, d]."""
        self._check_k(k, self.index.size)
        return self.index.search(query_embeddings, k, exclude=exclude)

    def i2i(self, item_ids, k=10, *, exclude=None):
        """Top-k neighbours of indexed items, each item itself excluded.

        Args:
          item_ids: ids [B] of indexed items (ValueError names an unknown one).
          k: neighbours per item, at most (number of items - 1).
          exclude: optional further ids to leave out per item.

        Returns:
          (item_ids int64 [B, k], scores float32 [B, k]).
        """
        ids = np.asarray(item_ids).reshape(-1)
        self._check_k(k, self.index.size - 1)
        if exclude is not None and len(exclude) != len(ids):
            raise ValueError(f"exclude must have one list per item id ({len(ids)}), got "
                             f"{len(exclude)}")
        vectors = self.index.vectors_of(ids)  # raises on an unknown id
        ex = [[int(i)] + ([] if exclude is None else list(np.asarray(exclude[j]).reshape(-1)))
              for j, i in enumerate(ids.tolist())]
        return self.index.search(vectors, k, exclude=ex)

    def i2i_features(self, item_features, k=10, *, exclude=None, batch_size=4096):
        """Top-k neighbours of items given by features (through the item tower).

        When the features hold an indexed ``item_id`` column, pass it in ``exclude`` to
        leave the item itself out; a new (unindexed) item has nothing to exclude.
        """
        if self.item_tower is None:
            raise ValueError("this Retriever has no item_tower: use i2i with item ids")
        self._check_k(k, self.index.size)
        vectors = embed(self.item_tower, item_features, batch_size=batch_size,
                        desc="embedding items", progress=False)
        return self.index.search(vectors, k, exclude=exclude)
