"""A planted-model interaction log of any size, written to Parquet shards in bounded memory.

``data/synthetic.py`` draws exact softmax preferences, O(users × items) work: right for
tests, impossible at 10⁷ items. This generator keeps a model whose draws cost O(1) and
whose truth is still known exactly, so a benchmark can stream 10⁸ interactions and
still say what a perfect model would score.

The model. Items fall into C = N / S clusters of S items; item i is member j = i // C of
cluster c = i mod C. Clusters have Zipf weights w_c ∝ 1/rank_c^s (a random rank order)
and members have Zipf weights ω_j ∝ 1/(j+1)^s inside every cluster, so the popularity of
an item is π_i = w_c · ω_j (Zipf-like over the catalogue). Each user u has a home cluster
h_u ~ w. An interaction of u is

    with probability ρ:      a draw from π             (what popularity explains)
    with probability 1 − ρ:  member j ~ ω of cluster h_u  (the user's taste)

so P(i | u) = ρ π_i + (1 − ρ) 1[c(i) = h_u] ω_j. Both draws are alias-table lookups.
The **true neighbours** of an item are the members of its cluster (``cluster_of``); the
**oracle** recall@10 for a held-out draw is Σ of the 10 largest P(i | u), averaged over
users (``oracle_recall_at_10``).

Rows are written in a global random order without holding the log: pass 1 appends each
generated chunk to B bucket files at random; pass 2 shuffles each bucket in memory (one
bucket at a time) into a final shard. Each user's last interaction is held out (returned
as arrays: ``test_users``, ``test_items``), the rest form the training shards.
"""

import dataclasses
import os

import numpy as np

from twotower.data.samplers import AliasTable


@dataclasses.dataclass(frozen=True)
class PlantedLog:
    """Settings of the planted log (module docstring).

    num_items: N, a multiple of ``cluster_size``. num_interactions: rows in all (train +
    one held-out row per user). interactions_per_user: rows per user (so users =
    num_interactions // interactions_per_user). global_share: ρ. zipf_exponent: s.
    """

    num_items: int = 10_000
    num_interactions: int = 200_000
    interactions_per_user: int = 20
    cluster_size: int = 1000
    global_share: float = 0.5
    zipf_exponent: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name in ("num_items", "num_interactions", "interactions_per_user", "cluster_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.interactions_per_user < 2:
            raise ValueError("interactions_per_user must be >= 2 (one is held out), got "
                             f"{self.interactions_per_user!r}")
        if self.num_items % self.cluster_size:
            raise ValueError(f"num_items={self.num_items} must be a multiple of "
                             f"cluster_size={self.cluster_size}")
        if self.num_interactions < self.interactions_per_user:
            raise ValueError(f"num_interactions={self.num_interactions} must be >= "
                             f"interactions_per_user={self.interactions_per_user}")
        if not 0.0 <= self.global_share <= 1.0:
            raise ValueError(f"global_share must be in [0, 1], got {self.global_share!r}")
        if not np.isfinite(self.zipf_exponent) or self.zipf_exponent < 0:
            raise ValueError(f"zipf_exponent must be a finite number >= 0, got "
                             f"{self.zipf_exponent!r}")

    @property
    def num_clusters(self):
        return self.num_items // self.cluster_size

    @property
    def num_users(self):
        return self.num_interactions // self.interactions_per_user

    def cluster_of(self, item_ids):
        """The planted cluster of each item (its true neighbours share it)."""
        return np.asarray(item_ids, dtype=np.int64) % self.num_clusters

    def _weights(self):
        rng = np.random.default_rng([self.seed, 1])
        ranks = rng.permutation(self.num_clusters) + 1
        w = 1.0 / ranks ** self.zipf_exponent
        omega = 1.0 / np.arange(1, self.cluster_size + 1) ** self.zipf_exponent
        return w / w.sum(), omega / omega.sum()

    def popularity(self):
        """π_i = w_c · ω_j for every item [N] (float64; sums to 1)."""
        w, omega = self._weights()
        items = np.arange(self.num_items)
        return w[items % self.num_clusters] * omega[items // self.num_clusters]

    def true_neighbours(self, item_id, k=10):
        """The k most popular other members of ``item_id``'s cluster."""
        c = int(item_id) % self.num_clusters
        members = c + self.num_clusters * np.arange(self.cluster_size)
        return members[members != int(item_id)][:k]

    def oracle_recall_at_10(self, home_clusters):
        """Expected recall@10 of the planted P(i | u) for users with these home clusters."""
        w, omega = self._weights()
        rho, C = self.global_share, self.num_clusters
        top_global = np.argsort(-self.popularity())[:10]
        out = {}
        for h in np.unique(home_clusters):
            cand = np.concatenate([top_global, h + C * np.arange(min(10, self.cluster_size))])
            cand = np.unique(cand)
            p = rho * w[cand % C] * omega[cand // C] + (1 - rho) * (cand % C == h) * \
                omega[cand // C]
            out[int(h)] = float(np.sort(p)[-10:].sum())
        return float(np.mean([out[int(h)] for h in home_clusters]))


def _draw_chunk(planted, users, rng, tables):
    """Item ids [len(users), interactions_per_user] for a chunk of users; ``tables`` =
    (AliasTable of the cluster weights w, AliasTable of the member weights ω, home)."""
    clusters, members, home = tables
    C = planted.num_clusters
    shape = (len(users), planted.interactions_per_user)
    cluster = np.where(rng.random(shape) < planted.global_share,
                       clusters.draw(rng, shape), home[users][:, None])
    member = members.draw(rng, shape)
    return cluster + C * member


def write_planted_log(planted, folder, *, rows_per_shard=1_000_000, chunk_users=50_000,
                      overwrite=False, progress=True):
    """Writes the training rows of ``planted`` as Parquet shards under ``folder``.

    Columns user_id, item_id, timestamp (int64; a user's n-th interaction at time n), the
    format ``twotower.data.interactions`` reads. Memory: one chunk of users and one
    bucket of rows, whatever the log's size.

    Returns:
      dict with train_files (shard paths), rows, train_rows, item_counts [N] (training
      counts, for logQ), test_users / test_items (each user's held-out last draw),
      home_clusters [users], oracle_recall@10.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from twotower.artifacts import atomic_directory, check_output_dir

    check_output_dir(folder, overwrite=overwrite, flag="folder")
    rng = np.random.default_rng([planted.seed, 2])
    w, omega = planted._weights()
    clusters = AliasTable.from_probabilities(w)
    user_home = clusters.draw(rng, planted.num_users)               # home clusters ~ w
    tables = (clusters, AliasTable.from_probabilities(omega), user_home)
    k = planted.interactions_per_user
    train_rows = planted.num_users * (k - 1)
    num_buckets = max(1, -(-train_rows // rows_per_shard))
    counts = np.zeros(planted.num_items, np.int64)
    test_items = np.empty(planted.num_users, np.int64)
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                        ("timestamp", pa.int64())])
    with atomic_directory(folder, overwrite=overwrite, flag="folder") as tmp:
        bucket_dir = os.path.join(tmp, "buckets")
        os.makedirs(bucket_dir)
        writers = [pq.ParquetWriter(os.path.join(bucket_dir, f"b{b:05d}.parquet"), schema)
                   for b in range(num_buckets)]
        with tqdm(total=planted.num_users * k, desc="planted log", unit=" rows",
                  unit_scale=True, disable=not progress) as bar:
            for start in range(0, planted.num_users, chunk_users):
                users = np.arange(start, min(start + chunk_users, planted.num_users))
                items = _draw_chunk(planted, users, rng, tables)
                test_items[users] = items[:, -1]
                train = items[:, :-1]
                np.add.at(counts, train.reshape(-1), 1)
                u = np.repeat(users, k - 1)
                t = np.tile(np.arange(k - 1, dtype=np.int64), len(users))
                bucket = rng.integers(0, num_buckets, size=u.size)
                for b in range(num_buckets):
                    sel = bucket == b
                    writers[b].write_table(pa.table(
                        {"user_id": u[sel], "item_id": train.reshape(-1)[sel], "timestamp": t[sel]},
                        schema=schema))
                bar.update(len(users) * k)
        for wtr in writers:
            wtr.close()
        files = []
        for b in range(num_buckets):
            src = os.path.join(bucket_dir, f"b{b:05d}.parquet")
            table = pq.read_table(src)
            table = table.take(rng.permutation(table.num_rows))
            dst = os.path.join(tmp, f"part-{b:05d}.parquet")
            pq.write_table(table, dst, row_group_size=65536)
            os.remove(src)
            files.append(os.path.basename(dst))
        os.rmdir(bucket_dir)
    users = np.arange(planted.num_users, dtype=np.int64)
    return {"train_files": [os.path.join(os.path.abspath(folder), f) for f in files],
            "rows": planted.num_users * k, "train_rows": train_rows, "item_counts": counts,
            "test_users": users, "test_items": test_items, "home_clusters": user_home,
            "oracle_recall@10": planted.oracle_recall_at_10(user_home)}
