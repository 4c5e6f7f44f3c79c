import numpy as np
import pytest

import twotower  # noqa: F401
from twotower.index import config as config_lib
from twotower.index.brute_force import recall_at_k
from twotower.index.builder import build_index, exact_index


def test_exclusions_return_exactly_k(corpus):
    items, queries = corpus
    index = exact_index(items, np.arange(len(items)) * 3)
    first, _ = index.search(queries[:5], 10)
    exclude = [row[:4] for row in first]
    ids, _ = index.search(queries[:5], 10, exclude=exclude)
    ref, _ = index.exact_search(queries[:5], 10, exclude=exclude)
    np.testing.assert_array_equal(ids, ref)
    np.testing.assert_array_equal(ids[:, :6], first[:, 4:])
    for row, ex in zip(ids, exclude):
        assert not set(row) & set(ex) and len(set(row)) == 10


def _check_against_rebuild(index, queries, config):
    """Same items after updates as a fresh index over them: exact results equal."""
    rebuilt = build_index(index.vectors, index.item_ids, config)
    got, _ = index.search(queries, 10)
    want, _ = rebuilt.search(queries, 10)
    return got, want


@pytest.mark.parametrize("config", [
    config_lib.exact("cosine"),
    config_lib.IndexConfig(distance="dot", num_leaves=30, num_leaves_to_search=30,
                           reorder=3000),
])
def test_updates_match_a_rebuild(corpus, config):
    items, queries = corpus
    rng = np.random.default_rng(3)
    base, extra = items[:2500], items[2500:]
    index = build_index(base, np.arange(2500) + 10, config)
    index.add(np.arange(500) + 100_000, extra)
    index.remove(rng.choice(np.arange(2500) + 10, size=300, replace=False))
    index.remove([100_000 + 499, 100_000 + 3])  # including the last position
    replaced = np.array([11, 12, 100_001])
    index.replace(replaced, -items[:3])
    assert index.size == 2500 + 500 - 302
    assert len(set(index.item_ids.tolist())) == index.size
    got, want = _check_against_rebuild(index, queries, config)
    np.testing.assert_array_equal(got, want)
    # exact ScaNN search over the updated index equals numpy over the updated vectors
    exact, _ = index.exact_search(queries, 10)
    np.testing.assert_array_equal(got, exact)
    # the id -> vector mapping follows the moves
    vec = -items[:3] if config.distance == "dot" else \
        -items[:3] / np.linalg.norm(items[:3], axis=1, keepdims=True)
    np.testing.assert_allclose(index.vectors_of(replaced), vec, rtol=1e-6)
    np.testing.assert_allclose(index.vectors_of([100_000 + 7]),
                               index.vectors[index.positions([100_000 + 7])])


def test_updates_on_an_approximate_index_keep_recall(corpus):
    items, queries = corpus
    index = build_index(items[:2000], distance="cosine", num_leaves=40,
                        num_leaves_to_search=20, reorder=200, brute_force=False)
    index.add(np.arange(2000, 3000), items[2000:])
    index.remove(np.arange(0, 2000, 2))
    ids, _ = index.search(queries, 10)
    truth, _ = index.exact_search(queries, 10)
    assert recall_at_k(ids, truth) >= 0.9
    assert not set(ids.ravel().tolist()) & set(range(0, 2000, 2))


def test_update_errors(corpus):
    items, _ = corpus
    index = exact_index(items[:100])
    with pytest.raises(ValueError, match=r"already indexed: \[5\]"):
        index.add([5], items[:1])
    with pytest.raises(ValueError, match="unknown item id 555"):
        index.replace([555], items[:1])
    with pytest.raises(ValueError, match="unknown item id 555"):
        index.remove([3, 555])
    assert index.size == 100  # nothing half done
    with pytest.raises(ValueError, match=r"vectors must have shape \[n, 16\]"):
        index.add([1000], items[:1, :3])
    with pytest.raises(ValueError, match="item_ids must be integer ids"):
        index.add(["a"], items[:1])
