"""Synthetic interactions with a planted latent model and Zipf popularity, at any scale.

Users x_u ~ N(0, I/d), items y_i ~ N(0, I/d) around one of ``num_clusters`` centres, and
item popularity π_i ∝ 1 / rank^s (Zipf). A user u picks item i with probability

    P(i | u) ∝ π_i · exp(β · <x_u, y_i>)

so a model can learn the preference part (<x_u, y_i>) while popularity alone explains
part of the data — the situation that logQ correction is meant for. Draws are exact (one
categorical per user), chunked over users so memory stays O(chunk × num_items).
For catalogues too large for that (10⁷ items), ``twotower.data.planted_log`` has a
clustered planted model with O(1) draws, written to Parquet shards.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PlantedConfig:
    """Settings of the planted model (see the module docstring)."""

    num_users: int = 1000
    num_items: int = 500
    dim: int = 16
    interactions_per_user: int = 20
    num_clusters: int = 10
    beta: float = 8.0
    zipf_exponent: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name in ("num_users", "num_items", "dim", "interactions_per_user", "num_clusters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not np.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta!r}")
        if not np.isfinite(self.zipf_exponent) or self.zipf_exponent < 0:
            raise ValueError(f"zipf_exponent must be a finite number >= 0, got "
                             f"{self.zipf_exponent!r}")


@dataclasses.dataclass
class PlantedData:
    """users [n], items [n] (interaction pairs, grouped by user), the planted factors,
    and the popularity π."""

    config: PlantedConfig
    users: np.ndarray
    items: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    popularity: np.ndarray

    def split_last(self, per_user=1):
        """(train, test) index arrays: each user's last ``per_user`` draws are test."""
        k = self.config.interactions_per_user
        if not 1 <= per_user < k:
            raise ValueError(f"per_user must be in [1, interactions_per_user={k}), got "
                             f"{per_user!r}")
        position = np.arange(self.users.size) % k
        return np.flatnonzero(position < k - per_user), np.flatnonzero(position >= k - per_user)


def planted_interactions(config=PlantedConfig(), chunk_users=1024):
    """Draws ``config.interactions_per_user`` items for every user (module docstring)."""
    c = config
    rng = np.random.default_rng(c.seed)
    centres = rng.normal(size=(c.num_clusters, c.dim))
    cluster = rng.integers(0, c.num_clusters, size=c.num_items)
    item_factors = (centres[cluster] + 0.5 * rng.normal(size=(c.num_items, c.dim))) / np.sqrt(c.dim)
    user_factors = (centres[rng.integers(0, c.num_clusters, size=c.num_users)]
                    + 0.5 * rng.normal(size=(c.num_users, c.dim))) / np.sqrt(c.dim)
    ranks = rng.permutation(c.num_items) + 1
    popularity = 1.0 / ranks ** c.zipf_exponent
    popularity /= popularity.sum()
    items = np.empty((c.num_users, c.interactions_per_user), dtype=np.int64)
    for start in range(0, c.num_users, chunk_users):
        logits = c.beta * user_factors[start:start + chunk_users] @ item_factors.T
        logits += np.log(popularity)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        cdf = np.cumsum(probs, axis=1)
        u = rng.random(size=(len(probs), c.interactions_per_user, 1))
        items[start:start + chunk_users] = np.minimum(
            (cdf[:, np.newaxis, :] < u).sum(axis=2), c.num_items - 1)
    users = np.repeat(np.arange(c.num_users, dtype=np.int64), c.interactions_per_user)
    return PlantedData(c, users, items.reshape(-1), user_factors.astype(np.float32),
                       item_factors.astype(np.float32), popularity)

