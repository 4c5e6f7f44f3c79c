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
