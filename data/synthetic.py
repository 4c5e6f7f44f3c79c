"""Synthetic interactions with a planted latent model and Zipf popularity, at any scale.

Users x_u ~ N(0, I/d), items y_i ~ N(0, I/d) around one of ``num_clusters`` centres, and
item popularity π_i ∝ 1 / rank^s (Zipf). A user u picks item i with probability

    P(i | u) ∝ π_i · exp(β · <x_u, y_i>)

so a model can learn the preference part (<x_u, y_i>) while popularity alone explains
part of the data — the situation that logQ correction is meant for. Draws are exact (one
categorical per user), chunked over users so memory stays O(chunk × num_items).
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


# ----------------------------------------------------------------------------- at scale

@dataclasses.dataclass(frozen=True)
class ClusteredConfig:
    """A planted model whose draws cost O(num_clusters + log num_items), for corpora of
    10⁷ items and 10⁸ interactions (``write_planted_shards``).

    Items: item i belongs to cluster k_i (uniform over ``num_clusters``) and has Zipf
    popularity π_i ∝ 1 / rank_i^s (ranks a random permutation). Clusters have centres
    c_k ~ N(0, I/d). Users: x_u = c_{h_u} + 0.5·N(0, I/d) around a home cluster h_u. A
    draw for user u picks a cluster, then an item of it by popularity:

        P(k | u) ∝ Π_k · exp(β · <x_u, c_k>),   Π_k = Σ_{i ∈ k} π_i
        P(i | u) = P(k_i | u) · π_i / Π_{k_i}  ∝  π_i · exp(β · <x_u, c_{k_i}>)

    — the planted model of ``planted_interactions`` with every item's factor at its
    cluster's centre, so popularity explains part of the data and the cluster (learnable
    from ids and histories) the rest. The true neighbours of an item are its cluster;
    ``true_top_items`` gives a user's exact top-k under P(i | u).
    """

    num_users: int = 100_000
    num_items: int = 1_000_000
    interactions_per_user: int = 20
    num_clusters: int = 1000
    dim: int = 16
    beta: float = 8.0
    zipf_exponent: float = 1.0
    seed: int = 0

    def __post_init__(self):
        PlantedConfig(num_users=self.num_users, num_items=self.num_items, dim=self.dim,
                      interactions_per_user=self.interactions_per_user,
                      num_clusters=self.num_clusters, beta=self.beta,
                      zipf_exponent=self.zipf_exponent, seed=self.seed)
        if self.num_clusters > self.num_items:
            raise ValueError(f"num_clusters must be <= num_items={self.num_items}, got "
                             f"{self.num_clusters!r}")

    @property
    def num_interactions(self):
        return self.num_users * self.interactions_per_user


@dataclasses.dataclass
class ClusteredModel:
    """The planted parameters of a ClusteredConfig (what ``write_planted_shards`` saves as
    ``_planted.npz`` beside the shards; ``load_planted`` reads it back).

    item_cluster [N] int32, popularity π [N] float64 (sums to 1), centres [C, d],
    user_factors [U, d] float32, user_home [U] int32; and for drawing: by_cluster [N]
    (item indexes ordered by cluster), cum [N] (cumulative π in that order), cluster_start
    [C + 1] offsets into it, cluster_mass Π [C].
    """

    config: ClusteredConfig
    item_cluster: np.ndarray
    popularity: np.ndarray
    centres: np.ndarray
    user_factors: np.ndarray
    user_home: np.ndarray

    def __post_init__(self):
        self.by_cluster = np.argsort(self.item_cluster, kind="stable")
        self.cum = np.cumsum(self.popularity[self.by_cluster])
        counts = np.bincount(self.item_cluster, minlength=self.config.num_clusters)
        self.cluster_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.cluster_mass = np.bincount(self.item_cluster, weights=self.popularity,
                                        minlength=self.config.num_clusters)

    def cluster_probabilities(self, users):
        """P(k | u) [len(users), C]."""
        c = self.config
        logits = c.beta * self.user_factors[users].astype(np.float64) @ self.centres.T
        with np.errstate(divide="ignore"):
            logits += np.log(self.cluster_mass)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def draw(self, users, rng):
        """``interactions_per_user`` item draws for each of ``users``: [len(users), m]."""
        m = self.config.interactions_per_user
        pk = self.cluster_probabilities(users)
        cdf = np.cumsum(pk, axis=1)
        cdf[:, -1] = 1.0
        u = rng.random((len(users), m))
        # every row's CDF shifted by its row number: one searchsorted for all rows
        C = self.config.num_clusters
        shift = np.arange(len(users), dtype=np.float64)[:, None]
        flat = np.searchsorted((cdf + shift).ravel(), (u + shift).ravel(), side="right")
        k = np.minimum(flat.reshape(u.shape) - np.arange(len(users))[:, None] * C, C - 1)
        k = np.maximum(k, 0)
        # an item of cluster k by popularity: a point in k's stretch of the cumulative π
        lo = np.where(self.cluster_start[k] > 0, self.cum[self.cluster_start[k] - 1], 0.0)
        hi = self.cum[self.cluster_start[k + 1] - 1]
        v = lo + rng.random(k.shape) * (hi - lo)
        pos = np.searchsorted(self.cum, v, side="right")
        pos = np.clip(pos, self.cluster_start[k], self.cluster_start[k + 1] - 1)
        return self.by_cluster[pos]

    def true_top_items(self, users, k=10):
        """The exact top-``k`` items of each user under P(i | u): [len(users), k]. Within
        a cluster the order is by π, so the top-k is among the top-k of every cluster."""
        pk = self.cluster_probabilities(np.asarray(users))
        cands, within = [], []
        for c in range(self.config.num_clusters):
            members = self.by_cluster[self.cluster_start[c]:self.cluster_start[c + 1]]
            if len(members) == 0:
                continue
            top = members[np.argsort(-self.popularity[members], kind="stable")[:k]]
            cands.append(top)
            within.append(np.full(len(top), c))
        cands, cl = np.concatenate(cands), np.concatenate(within)
        mass = np.maximum(self.cluster_mass[cl], 1e-300)
        scores = pk[:, cl] * (self.popularity[cands] / mass)[None, :]
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return cands[best]


def clustered_model(config=ClusteredConfig()):
    """Draws the planted parameters of ``config`` (memory O(num_items + num_users·d))."""
    c = config
    rng = np.random.default_rng(c.seed)
    centres = rng.normal(size=(c.num_clusters, c.dim)) / np.sqrt(c.dim)
    item_cluster = rng.integers(0, c.num_clusters, size=c.num_items).astype(np.int32)
    ranks = rng.permutation(c.num_items) + 1.0
    popularity = ranks ** -c.zipf_exponent
    popularity /= popularity.sum()
    home = rng.integers(0, c.num_clusters, size=c.num_users).astype(np.int32)
    users = (centres[home] + 0.5 * rng.normal(size=(c.num_users, c.dim)) / np.sqrt(c.dim))
    return ClusteredModel(c, item_cluster, popularity, centres, users.astype(np.float32), home)


def write_planted_shards(out_dir, config=ClusteredConfig(), *, rows_per_shard=1_000_000,
                         chunk_users=8192, overwrite=False, progress=True):
    """Writes a ClusteredConfig corpus as Parquet shards in the interaction-log format
    (twotower.data.interactions: user_id, item_id, timestamp, int64), in bounded memory.

    Users are drawn in chunks of ``chunk_users`` (memory O(chunk_users × num_clusters)
    plus the model's O(num_items)); each chunk's rows go straight to the current shard.
    User u's j-th draw has timestamp u·m + j (m = interactions_per_user), so a
    leave-last-out split holds out each user's last draw. The planted parameters are saved
    as ``_planted.npz`` in the folder (``load_planted``). The folder is written atomically
    (twotower.artifacts.atomic_directory) with a tqdm progress bar over interactions.

    Returns (list of shard paths, ClusteredModel).
    """
    import json
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from twotower.artifacts import atomic_directory, check_output_dir

    if not isinstance(rows_per_shard, (int, np.integer)) or rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be an int >= 1, got {rows_per_shard!r}")
    if not isinstance(chunk_users, (int, np.integer)) or chunk_users < 1:
        raise ValueError(f"chunk_users must be an int >= 1, got {chunk_users!r}")
    check_output_dir(out_dir, overwrite=overwrite, flag="out_dir")
    model = clustered_model(config)
    c = config
    rng = np.random.default_rng([c.seed, 1])
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                        ("timestamp", pa.int64())])
    names = []
    with atomic_directory(out_dir, overwrite=overwrite, flag="out_dir") as tmp:
        writer, in_shard = None, 0
        with tqdm(total=c.num_interactions, unit=" rows", unit_scale=True,
                  desc="planted shards", disable=not progress) as bar:
            for start in range(0, c.num_users, chunk_users):
                users = np.arange(start, min(start + chunk_users, c.num_users), dtype=np.int64)
                items = model.draw(users, rng).reshape(-1)
                u = np.repeat(users, c.interactions_per_user)
                ts = u * c.interactions_per_user + np.tile(
                    np.arange(c.interactions_per_user), len(users))
                batch = pa.RecordBatch.from_arrays(
                    [pa.array(u), pa.array(items.astype(np.int64)), pa.array(ts)], schema=schema)
                while batch.num_rows:
                    if writer is None:
                        names.append(f"part-{len(names):05d}.parquet")
                        writer = pq.ParquetWriter(os.path.join(tmp, names[-1]), schema,
                                                  compression="zstd")
                        in_shard = 0
                    take = min(batch.num_rows, rows_per_shard - in_shard)
                    writer.write_batch(batch.slice(0, take))
                    in_shard += take
                    batch = batch.slice(take)
                    if in_shard == rows_per_shard:
                        writer.close()
                        writer = None
                bar.update(len(u))
        if writer is not None:
            writer.close()
        np.savez(os.path.join(tmp, "_planted.npz"), item_cluster=model.item_cluster,
                 popularity=model.popularity, centres=model.centres,
                 user_factors=model.user_factors, user_home=model.user_home,
                 config=json.dumps(dataclasses.asdict(c)))
    return [os.path.join(os.path.abspath(out_dir), n) for n in names], model


def load_planted(folder):
    """The ClusteredModel saved by ``write_planted_shards`` in ``folder``."""
    import json
    import os

    path = os.path.join(folder, "_planted.npz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder!r} holds no _planted.npz (not a write_planted_shards "
                                f"folder)")
    z = np.load(path)
    config = ClusteredConfig(**json.loads(str(z["config"])))
    return ClusteredModel(config, z["item_cluster"], z["popularity"], z["centres"],
                          z["user_factors"], z["user_home"])
