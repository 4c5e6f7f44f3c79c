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
    """

    def __init__(self, index, query_tower=None, item_tower=None):
        self.index = index
        self.query_tower = query_tower
        self.item_tower = item_tower

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
