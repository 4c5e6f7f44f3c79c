"""A tiny planted MovieLens-100K-format folder for the recipe tests.

4 genre clusters of 20 movies; each of 80 users likes one cluster and watches, in time
order, 9 of its movies and 1 random other movie (800 ratings). Popularity is flat across
clusters, so a model that learns the user -> cluster link from the id or the history must
beat the popularity baseline; movie 81 is never rated (a cold-start item in the corpus)
and user 81 has no ratings (a cold-start user).
"""

import os

import numpy as np
import pytest

from twotower.data.movielens import ML100K_GENRES

CLUSTER_GENRES = ("Action", "Comedy", "Drama", "Horror")
WORDS = ("red", "blue", "green", "gold")


def write_planted_ml100k(folder, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    n_clusters, per_cluster, n_users = 4, 20, 80
    items = []
    for c in range(n_clusters):
        for j in range(per_cluster):
            mid = c * per_cluster + j + 1
            flags = ["0"] * len(ML100K_GENRES)
            flags[ML100K_GENRES.index(CLUSTER_GENRES[c])] = "1"
            items.append(f"{mid}|{WORDS[c].title()} Movie {mid} (19{90 + c})|01-Jan-19{90 + c}"
                         f"||http://x|" + "|".join(flags))
    cold = ["0"] * len(ML100K_GENRES)
    cold[ML100K_GENRES.index("Action")] = "1"
    items.append("81|Red Movie Cold (1990)|01-Jan-1990||http://x|" + "|".join(cold))
    ratings, users = [], []
    for u in range(1, n_users + 1):
        c = (u - 1) % n_clusters
        own = rng.choice(per_cluster, 9, replace=False) + c * per_cluster + 1
        other = rng.integers(1, n_clusters * per_cluster + 1)
        seq = list(own) + ([other] if other not in own else [])
        rng.shuffle(seq)
        for t, m in enumerate(seq):
            ratings.append(f"{u}\t{m}\t{rng.integers(3, 6)}\t{880000000 + 1000 * u + t}")
        users.append(f"{u}|{20 + c * 10}|{'MF'[c % 2]}|{['artist', 'doctor', 'lawyer', 'writer'][c]}|"
                     f"{10000 * (c + 1) + u}")
    users.append("81|30|F|artist|12345")
    for name, lines in (("u.data", ratings), ("u.item", items), ("u.user", users)):
        with open(os.path.join(folder, name), "w", encoding="latin-1") as f:
            f.write("\n".join(lines) + "\n")
    return str(folder)


@pytest.fixture(scope="session")
def planted_ml100k(tmp_path_factory):
    return write_planted_ml100k(tmp_path_factory.mktemp("planted") / "ml-100k")


def check_export(out, *, k=5):
    """Asserts that a MovieLens recipe's --out holds what issue 9 §4 lists: metrics.json,
    the plot, the index folder `twotower serve` takes (reloaded here through its
    checksums, asked for a user's top-k), and the SavedModel. Returns the metrics."""
    import json

    from twotower.index import persistence

    for name in ("metrics.json", "recall_at_k.png", "index/manifest.json",
                 "saved_model/saved_model.pb", ".twotower-artifact"):
        assert os.path.exists(os.path.join(out, name)), name
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    retriever = persistence.load(os.path.join(out, "index"))
    user = int(retriever.user_table["user_id"][0])  # internal id
    seen = retriever.user_seen[user]
    if retriever.user_vocab is not None:  # asked and answered in the log's own ids
        user = retriever.user_vocab.external(np.array([user]))[0]
        seen = retriever.item_vocab.external(seen)
    ids, scores = retriever.u2i_users([user], k)
    assert ids.shape == (1, k) and np.all(np.diff(scores[0]) <= 1e-6)
    assert not set(ids[0].tolist()) & set(np.asarray(seen).tolist())
    # the index answers as the exact evaluation scores (tuned to recall@10 >= 0.95)
    assert metrics["index_vs_exact_recall@10"] >= 0.95
    assert abs(metrics["index_recall@10"] - metrics["recall@10"]) <= 0.05
    return metrics


@pytest.fixture
def exported():
    """check_export as a fixture: ``exported(out)``."""
    return check_export
