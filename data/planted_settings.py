"""Planted logs for the settings where the choice of loss should matter: drift, fresh
items, heavy skew (issue 24 §2). In memory, with a known generating model.

All three share the clustered Zipf model of ``data/planted_log.py``: items i = c + C·j
(cluster c = i mod C, member j = i // C), cluster weights w_c ∝ 1/rank_c^s, member
weights ω_j ∝ 1/(j+1)^s, popularity π_i = w_c·ω_j; each user u has a home cluster
h_u ~ w, and one interaction of u is

    with probability ρ:      a draw from the global distribution ∝ π_i · m_i
    with probability 1 − ρ:  a member of cluster h_u, drawn ∝ ω_j · m_i

where m_i ≥ 0 is the setting's item modulation (m ≡ 1 is the planted log). Each item's
one feature is its cluster c (``item_cluster``): an item tower that reads it can place an
item it has never seen in training.

* ``skew_log`` — m ≡ 1, Zipf exponent s ≥ 1: a heavy head and a long tail. Each user's
  last draw is the test row, the one before it the validation row.
* ``drift_log`` — m_i(t) = a((t − b_i) / L): item i is born at b_i ~ U(−L, 1), rises to
  its peak at b_i + L and fades, a(x) = x·e^{1−x} for x > 0, else 0 (YouTube 2019's
  setting: popularity changes over time). Each user's interactions fall at uniform
  times t ∈ [0, 1); the log is in time order; train is t < 1 − 2·window, validation the
  next window, test the last one (every row in those windows).
* ``fresh_log`` — a share f of the catalogue (``fresh``) arrives late: in training its
  items have m = ``fresh_train_weight`` (few or no interactions), in validation and test
  m = ``fresh_boost`` (new items draw attention), m = 1 for the rest. Mixed negatives
  (Yang et al., WWW 2020) were built for them: in-batch candidates hold only items the
  batch holds.

Draws inside a cluster with per-item weights use one flattened cumulative sum over the
[C, S] weight matrix, each row normalised to 1, searched at h + U(0, 1): O(log N) a draw.
"""

import dataclasses

import numpy as np

from twotower.data.planted_log import PlantedLog
from twotower.data.samplers import AliasTable


@dataclasses.dataclass
class SettingLog:
    """A planted setting's log, split. Arrays of int64 ids unless said.

    train_users / train_items / train_times: the training rows in the order to train
    them (time order for drift, a random order otherwise; times are row positions then).
    valid_* / test_*: held-out rows (user, item). item_cluster [N]: each item's feature.
    fresh [N] bool: the late items (all False outside ``fresh_log``). home_clusters
    [users]. info: the settings that made the log. valid_times / test_times: the time of
    each held-out row where the generating model depends on it (drift), else None.
    """

    name: str
    num_users: int
    num_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    train_times: np.ndarray
    valid_users: np.ndarray
    valid_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray
    item_cluster: np.ndarray
    fresh: np.ndarray
    home_clusters: np.ndarray
    info: dict
    valid_times: np.ndarray = None
    test_times: np.ndarray = None

    def item_counts(self):
        """Training counts per item [N] (what a static logQ is computed from)."""
        return np.bincount(self.train_items, minlength=self.num_items)


def _planted(num_items, num_users, interactions_per_user, cluster_size, global_share,
             zipf_exponent, seed):
    return PlantedLog(num_items=num_items, num_interactions=num_users * interactions_per_user,
                      interactions_per_user=interactions_per_user, cluster_size=cluster_size,
                      global_share=global_share, zipf_exponent=zipf_exponent, seed=seed)


def _check_share(name, value, low=0.0, high=1.0):
    if not (np.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


def as_cluster_matrix(values, num_clusters):
    """Per-item values [N] as the [C, S] matrix M[c, j] = values[c + C·j]."""
    values = np.asarray(values)
    return values.reshape(-1, num_clusters).T


def draw_in_clusters(weights, homes, rng):
    """One member of cluster homes[r] for each r, drawn ∝ weights[homes[r], :]; returns
    item ids c + C·j. ``weights`` [C, S] ≥ 0; a row summing to 0 is drawn uniformly."""
    weights = np.asarray(weights, np.float64)
    C, S = weights.shape
    sums = weights.sum(axis=1, keepdims=True)
    rows = np.where(sums > 0, weights / np.where(sums > 0, sums, 1.0), 1.0 / S)
    cdf = np.cumsum(rows, axis=1)
    cdf[:, -1] = 1.0
    flat = (cdf + np.arange(C)[:, None]).reshape(-1)
    homes = np.asarray(homes, np.int64)
    pos = np.searchsorted(flat, homes + rng.random(homes.shape), side="right")
    member = np.clip(pos - homes * S, 0, S - 1)
    return homes + C * member


def _draw(planted, homes, rng, modulation):
    """Items for users with home clusters ``homes`` under item modulation m [N]."""
    w, omega = planted._weights()
    C = planted.num_clusters
    pi = planted.popularity() * modulation
    global_draw = rng.random(homes.shape) < planted.global_share
    out = np.empty(homes.shape, np.int64)
    if global_draw.any():
        out[global_draw] = AliasTable.from_probabilities(pi / pi.sum()).draw(
            rng, int(global_draw.sum()))
    taste = ~global_draw
    if taste.any():
        weights = omega[None, :] * as_cluster_matrix(modulation, C)
        out[taste] = draw_in_clusters(weights, homes[taste], rng)
    return out


def _user_split(name, planted, items, homes, fresh, rng, info):
    """Last column = test, the one before = validation, the rest train (random order)."""
    U, k = items.shape
    users = np.arange(U, dtype=np.int64)
    train = items[:, :-2].reshape(-1)
    train_users = np.repeat(users, k - 2)
    train_times = np.tile(np.arange(k - 2, dtype=np.int64), U)
    order = rng.permutation(train.size)
    return SettingLog(name=name, num_users=U, num_items=planted.num_items,
                      train_users=train_users[order], train_items=train[order],
                      train_times=train_times[order], valid_users=users,
                      valid_items=items[:, -2].copy(), test_users=users,
                      test_items=items[:, -1].copy(),
                      item_cluster=np.arange(planted.num_items, dtype=np.int64) % planted.num_clusters,
                      fresh=fresh, home_clusters=homes, info=info)


def skew_log(num_items=20_000, num_users=10_000, interactions_per_user=20, *,
             cluster_size=100, global_share=0.5, zipf_exponent=1.2, seed=0):
    """Heavy skew (module docstring): the planted log with Zipf exponent s (≥ 1 is the
    setting; any s ≥ 0 is accepted), in memory. interactions_per_user ≥ 3 (two held out)."""
    if interactions_per_user < 3:
        raise ValueError(f"interactions_per_user must be >= 3 (two are held out), got "
                         f"{interactions_per_user!r}")
    planted = _planted(num_items, num_users, interactions_per_user, cluster_size,
                       global_share, zipf_exponent, seed)
    rng = np.random.default_rng([seed, 24, 1])
    w, _ = planted._weights()
    homes = AliasTable.from_probabilities(w).draw(rng, num_users).astype(np.int64)
    items = _draw(planted, np.repeat(homes[:, None], interactions_per_user, axis=1), rng,
                  np.ones(num_items))
    info = dict(setting="skew", num_items=num_items, num_users=num_users,
                interactions_per_user=interactions_per_user, cluster_size=cluster_size,
                global_share=global_share, zipf_exponent=zipf_exponent, seed=seed)
    return _user_split("skew", planted, items, homes, np.zeros(num_items, bool), rng, info)


def fresh_log(num_items=20_000, num_users=10_000, interactions_per_user=20, *,
              cluster_size=100, global_share=0.5, zipf_exponent=1.0, fresh_share=0.2,
              fresh_train_weight=0.02, fresh_boost=3.0, seed=0):
    """Fresh items (module docstring): a random ``fresh_share`` of the items has
    modulation ``fresh_train_weight`` in training and ``fresh_boost`` in validation and
    test. interactions_per_user ≥ 3 (two held out)."""
    if interactions_per_user < 3:
        raise ValueError(f"interactions_per_user must be >= 3 (two are held out), got "
                         f"{interactions_per_user!r}")
    _check_share("fresh_share", fresh_share)
    _check_share("fresh_train_weight", fresh_train_weight, 0.0, np.inf)
    _check_share("fresh_boost", fresh_boost, 0.0, np.inf)
    planted = _planted(num_items, num_users, interactions_per_user, cluster_size,
                       global_share, zipf_exponent, seed)
    rng = np.random.default_rng([seed, 24, 2])
    fresh = rng.random(num_items) < fresh_share
    w, _ = planted._weights()
    homes = AliasTable.from_probabilities(w).draw(rng, num_users).astype(np.int64)
    k = interactions_per_user
    m_train = np.where(fresh, fresh_train_weight, 1.0)
    m_test = np.where(fresh, fresh_boost, 1.0)
    train = _draw(planted, np.repeat(homes[:, None], k - 2, axis=1), rng, m_train)
    held = _draw(planted, np.repeat(homes[:, None], 2, axis=1), rng, m_test)
    info = dict(setting="fresh", num_items=num_items, num_users=num_users,
                interactions_per_user=k, cluster_size=cluster_size,
                global_share=global_share, zipf_exponent=zipf_exponent,
                fresh_share=fresh_share, fresh_train_weight=fresh_train_weight,
                fresh_boost=fresh_boost, seed=seed)
    return _user_split("fresh", planted, np.concatenate([train, held], axis=1), homes, fresh,
                       rng, info)


def _time_bucket(times, time_buckets):
    """The generator's time bucket of each time in [0, 1): 0 … time_buckets − 1."""
    return np.minimum((np.asarray(times) * time_buckets).astype(np.int64), time_buckets - 1)


def _bucket_time(bucket, time_buckets):
    """The time at which the generator draws a bucket's rows: its midpoint."""
    return (bucket + 0.5) / time_buckets


def lifecycle(x):
    """a(x) = x·e^{1−x} for x > 0, else 0: rises to 1 at x = 1, then fades."""
    x = np.asarray(x, np.float64)
    return np.where(x > 0, x * np.exp(1.0 - np.maximum(x, 0.0)), 0.0)


def drift_log(num_items=20_000, num_users=10_000, interactions_per_user=20, *,
              cluster_size=100, global_share=0.5, zipf_exponent=1.0, lifetime=0.1,
              window=0.05, time_buckets=100, seed=0):
    """Drift (module docstring): item i born at b_i ~ U(−lifetime, 1), modulation
    a((t − b_i) / lifetime); rows at uniform times, drawn per time bucket (of
    ``time_buckets``); train t < 1 − 2·window in time order, then validation and test
    windows. ``info["birth"]`` holds b [N]."""
    _check_share("window", window, 1e-6, 0.25)
    _check_share("lifetime", lifetime, 1e-6, 1.0)
    if not isinstance(time_buckets, (int, np.integer)) or time_buckets < 1:
        raise ValueError(f"time_buckets must be an int >= 1, got {time_buckets!r}")
    planted = _planted(num_items, num_users, interactions_per_user, cluster_size,
                       global_share, zipf_exponent, seed)
    rng = np.random.default_rng([seed, 24, 3])
    birth = rng.uniform(-lifetime, 1.0, num_items)
    w, _ = planted._weights()
    homes = AliasTable.from_probabilities(w).draw(rng, num_users).astype(np.int64)
    users = np.repeat(np.arange(num_users, dtype=np.int64), interactions_per_user)
    times = rng.random(users.size)
    bucket = _time_bucket(times, time_buckets)
    items = np.empty(users.size, np.int64)
    for b in range(time_buckets):
        sel = np.flatnonzero(bucket == b)
        if sel.size:
            m = lifecycle((_bucket_time(b, time_buckets) - birth) / lifetime)
            items[sel] = _draw(planted, homes[users[sel]], rng, m)
    order = np.argsort(times, kind="stable")
    users, items, times = users[order], items[order], times[order]
    train_end, valid_end = 1.0 - 2 * window, 1.0 - window
    tr = times < train_end
    va = (times >= train_end) & (times < valid_end)
    te = times >= valid_end
    info = dict(setting="drift", num_items=num_items, num_users=num_users,
                interactions_per_user=interactions_per_user, cluster_size=cluster_size,
                global_share=global_share, zipf_exponent=zipf_exponent, lifetime=lifetime,
                window=window, time_buckets=time_buckets, seed=seed, birth=birth)
    return SettingLog(name="drift", num_users=num_users, num_items=num_items,
                      train_users=users[tr], train_items=items[tr], train_times=times[tr],
                      valid_users=users[va], valid_items=items[va], test_users=users[te],
                      test_items=items[te],
                      item_cluster=np.arange(num_items, dtype=np.int64) % planted.num_clusters,
                      fresh=np.zeros(num_items, bool), home_clusters=homes, info=info,
                      valid_times=times[va], test_times=times[te])


def _held_out_modulation(log, times):
    """The item modulation m [N] that drew held-out rows at ``times`` (a scalar time for
    drift; ignored elsewhere), as the generator applied it."""
    info = log.info
    if info["setting"] == "fresh":
        return np.where(log.fresh, info["fresh_boost"], 1.0)
    if info["setting"] == "drift":
        nb = info["time_buckets"]
        t = _bucket_time(_time_bucket(times, nb), nb)
        return lifecycle((t - info["birth"]) / info["lifetime"])
    return np.ones(log.num_items)


def true_probabilities(log, users, time=None):
    """P(i | u) of the model that generated ``log``'s held-out rows, [len(users), N]
    (float64; each row sums to 1): ρ·π_i·m_i / Σ π·m + (1 − ρ)·[c(i) = h_u]·ω_j·m_i /
    Σ_{j'} ω_{j'}·m_{c + C·j'} (module docstring), with the held-out modulation m (fresh:
    the boost; drift: the lifecycle at ``time``; skew: 1). What an oracle that knew the
    planted model, the user's home cluster and the time would rank by."""
    info = log.info
    planted = _planted(info["num_items"], info["num_users"], info["interactions_per_user"],
                       info["cluster_size"], info["global_share"], info["zipf_exponent"],
                       info["seed"])
    C, N = planted.num_clusters, log.num_items
    w, omega = planted._weights()
    m = _held_out_modulation(log, time)
    g = planted.popularity() * m
    g = g / g.sum() if g.sum() > 0 else np.full(N, 1.0 / N)
    taste = as_cluster_matrix(omega[np.arange(N) // C] * m, C)         # [C, S]
    sums = taste.sum(axis=1, keepdims=True)
    taste = np.where(sums > 0, taste / np.where(sums > 0, sums, 1.0), 1.0 / taste.shape[1])
    homes = log.home_clusters[np.asarray(users, np.int64)]
    out = np.repeat(planted.global_share * g[None, :], len(homes), axis=0)
    members = homes[:, None] + C * np.arange(taste.shape[1])[None, :]   # [B, S]
    out[np.arange(len(homes))[:, None], members] += (1 - planted.global_share) * taste[homes]
    return out


def oracle_ranks(log, users, items, times=None, chunk=256):
    """0-based rank of each held-out item among all N under ``true_probabilities`` (ties
    count against the target, as a model's rank does): the ceiling any model of the log
    can reach. ``times``: each row's time (drift; rows are grouped by the generator's
    time bucket)."""
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    ranks = np.empty(len(users), np.int64)
    if log.info["setting"] == "drift":
        if times is None:
            raise ValueError("times is required for the drift setting's oracle")
        nb = log.info["time_buckets"]
        keys = _time_bucket(times, nb)
    else:
        nb, keys = 1, np.zeros(len(users), np.int64)
    for key in np.unique(keys):
        rows = np.flatnonzero(keys == key)
        for start in range(0, len(rows), chunk):
            r = rows[start:start + chunk]
            p = true_probabilities(log, users[r], time=_bucket_time(key, nb))
            target = p[np.arange(len(r)), items[r]]
            ranks[r] = (p > target[:, None]).sum(axis=1)
    return ranks


SETTINGS = {"skew": skew_log, "fresh": fresh_log, "drift": drift_log}
