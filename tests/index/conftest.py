"""Small clustered corpora shared by the index tests (seeded, a few thousand vectors)."""

import numpy as np


def clustered(n, dim=16, *, clusters=20, seed=0, queries=100):
    """Items and queries from a mixture of anisotropic Gaussians (like trained embeddings)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)) * 2.0
    scales = rng.uniform(0.2, 1.0, size=dim)
    pick = rng.integers(clusters, size=n + queries)
    x = (centers[pick] + rng.normal(size=(n + queries, dim)) * scales).astype(np.float32)
    return x[:n], x[n:]


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def corpus():
    """(items [3000, 16], queries [100, 16]) clustered, seeded."""
    return clustered(3000)


@pytest.fixture(scope="session")
def corpus_with_held_out():
    """(items [6000, 16], queries [1200, 16]) from 30 clusters: tuning + held-out queries."""
    return clustered(6000, 16, clusters=30, seed=3, queries=1200)
