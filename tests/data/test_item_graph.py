import numpy as np
import pytest

from twotower.data.item_graph import ItemGraph


def test_edges_count_consecutive_distinct_items():
    g = ItemGraph([[0, 1, 2, 1], [0, 1, 1, 3], [4]], num_items=6)
    edges = {(int(s), int(t)): w for s, t, w in zip(g.sources, g.targets, g.weights)}
    assert edges == {(0, 1): 2, (1, 2): 1, (2, 1): 1, (1, 3): 1}
    assert sorted(g.isolated.tolist()) == [4, 5]  # 4 only ever alone, 5 never seen
    nbrs, p = g.transition_probabilities(1)
    assert dict(zip(nbrs.tolist(), p.tolist())) == {2: 0.5, 3: 0.5}


def test_weighted_walks_follow_edge_weights_and_uniform_walks_do_not():
    # 0 → 1 nine times, 0 → 2 once
    g = ItemGraph([[0, 1]] * 9 + [[0, 2]], num_items=3)
    weighted = g.random_walks(2, walks_per_node=4000, seed=0, start_nodes=[0])
    second = np.array([w[1] for w in weighted])
    assert abs((second == 1).mean() - 0.9) < 0.02
    uniform = g.random_walks(2, walks_per_node=4000, weighted=False, seed=0, start_nodes=[0])
    assert abs((np.array([w[1] for w in uniform]) == 1).mean() - 0.5) < 0.03


def test_walks_stop_at_dead_ends_and_only_use_edges():
    g = ItemGraph([[0, 1, 2, 3], [3, 0]], num_items=5)
    walks = g.random_walks(6, walks_per_node=3, seed=1)
    edges = set(zip(g.sources.tolist(), g.targets.tolist()))
    assert len(walks) == 3 * 4  # nodes 0..3 have out-edges; isolated 4 starts none
    for w in walks:
        assert all((a, b) in edges for a, b in zip(w[:-1], w[1:]))
        assert 1 <= len(w) <= 6


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="sessions give no edges"):
        ItemGraph([[1], [2, 2]], num_items=3)
    with pytest.raises(ValueError, match=r"session 0 has item id 7, outside \[0, num_items=3\)"):
        ItemGraph([[0, 7]], num_items=3)
    g = ItemGraph([[0, 1]], num_items=2)
    with pytest.raises(ValueError, match="walk_length must be an int >= 2, got 1"):
        g.random_walks(1)
