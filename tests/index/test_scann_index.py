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


@pytest.mark.parametrize("distance", ["cosine", "dot"])
def test_one_query_path_equals_the_general_path(corpus, distance):
    """The one-query fast path (float32 [d] or [1, d], what the Retriever passes) returns
    what the general path returns for the same query (float64 input takes the general
    path; both end in ScaNN's single-query search)."""
    items, queries = corpus
    index = build_index(items, np.arange(len(items)) * 2 + 1, distance=distance,
                        num_leaves=40, num_leaves_to_search=3, reorder=40, brute_force=False)
    for j, q in enumerate(queries):
        want, want_scores = index.search(q.astype(np.float64), 10)
        for form in (q, q[None, :]):
            ids, scores = index.search(form, 10)
            assert ids.shape == (1, 10) and ids.dtype == np.int64
            assert scores.shape == (1, 10) and scores.dtype == np.float32
            np.testing.assert_array_equal(ids, want)
            np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
        # exclusions (i2i excludes the item itself) match the general path
        ex = [np.asarray([want[0, 0], want[0, 3], 7])]  # 7: not an indexed id
        got, _ = index.search(q[None, :], 10, exclude=ex)
        ref, _ = index.search(q[None, :].astype(np.float64), 10, exclude=ex)
        np.testing.assert_array_equal(got, ref)
        assert not {int(want[0, 0]), int(want[0, 3])} & set(got[0].tolist())
    # NaN and bad k still go through the general path's checks
    bad = queries[0].copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        index.search(bad, 10)
    with pytest.raises(ValueError, match="k must be an int"):
        index.search(queries[0], 0)


def test_one_row_norm_is_the_batch_norm_to_the_last_bit():
    """normalize() and the one-query path share one per-row formula: ``row @ row`` gives
    the bits squared_norms() gives for that row, so the normalised rows are identical
    (norms spread over six decades, zero rows included)."""
    from twotower.index.scann_index import _MIN_NORM, normalize, squared_norms

    rng = np.random.default_rng(7)
    for d in (3, 64, 100):
        v = (rng.standard_normal((500, d))
             * rng.lognormal(0, 3, (500, 1))).astype(np.float32)
        v[17] = 0
        ss = squared_norms(v)
        assert ss.dtype == np.float32 and ss.shape == (500,)
        np.testing.assert_allclose(ss, (v.astype(np.float64) ** 2).sum(1), rtol=1e-5)
        batch = normalize(v)
        for r in range(len(v)):
            row = v[r]
            assert (row @ row).tobytes() == ss[r].tobytes()
            one = row / max(np.sqrt(row @ row), _MIN_NORM)
            assert one.tobytes() == batch[r].tobytes(), r
        assert not batch[17].any()


def test_one_query_path_still_refuses_bad_queries(corpus):
    """Wrong width, inf and an empty batch raise the general path's ValueErrors."""
    items, queries = corpus
    index = build_index(items, distance="cosine", num_leaves=40, num_leaves_to_search=3,
                        reorder=40, brute_force=False)
    q = queries[0]
    with pytest.raises(ValueError, match="shape"):
        index.search(np.concatenate([q, q[:1]]), 10)
    bad = q.copy()
    bad[0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        index.search(bad[None, :], 10)
    with pytest.raises(ValueError, match="empty batch"):
        index.search(np.zeros((0, q.shape[0]), np.float32), 10)


def test_cpu_dispatch_is_idempotent_and_results_do_not_depend_on_it(corpus):
    """The kernels ScaNN dispatches to change the speed, not the answers: an exact index
    and an AH tree index trained with the flags as the wheel ships them return the same
    neighbours whichever kernels search them (the LUT16 codes are laid out alike)."""
    from twotower.index.scann_index import (cpu_dispatch_flags, enable_cpu_dispatch,
                                            kernels_as_shipped)

    items, queries = corpus
    state = enable_cpu_dispatch()
    assert enable_cpu_dispatch() is state
    assert set(state) >= {"avx2", "avx512", "changed"}
    before = cpu_dispatch_flags()
    assert before == {"avx2": state["avx2"], "avx512": state["avx512"]}
    cpu = open("/proc/cpuinfo").read().split()
    if "avx512bw" not in cpu:
        assert not before["avx512"]  # never set where the CPU lacks it
    index = exact_index(items, distance="dot")
    fast, fast_scores = index.search(queries, 10)
    with kernels_as_shipped():
        assert cpu_dispatch_flags() == {"avx2": False, "avx512": False}
        slow, slow_scores = index.search(queries, 10)
        tree = build_index(items, distance="dot", num_leaves=40, num_leaves_to_search=8,
                           reorder=30, brute_force=False)
        tree_slow, _ = tree.search(queries, 10)
    assert cpu_dispatch_flags() == before  # the flags are back as they were
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_allclose(fast_scores, slow_scores, rtol=1e-5, atol=1e-5)
    tree_fast, _ = tree.search(queries, 10)
    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(tree_fast, tree_slow)])
    assert same >= 0.98  # only float near-ties in the reorder may swap


def test_cpu_dispatch_off_and_bad_values(monkeypatch):
    from twotower.index import scann_index

    monkeypatch.setattr(scann_index, "_dispatch_state", None)
    monkeypatch.setenv("TWOTOWER_SCANN_DISPATCH", "off")
    state = scann_index.enable_cpu_dispatch()
    assert state["changed"] == [] and state["why"] == "TWOTOWER_SCANN_DISPATCH=off"
    monkeypatch.setattr(scann_index, "_dispatch_state", None)
    monkeypatch.setenv("TWOTOWER_SCANN_DISPATCH", "fast")
    with pytest.raises(ValueError, match="TWOTOWER_SCANN_DISPATCH must be auto or off, "
                                         "got 'fast'"):
        scann_index.enable_cpu_dispatch()
