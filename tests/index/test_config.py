import pytest

import twotower  # noqa: F401
from twotower.index import config as config_lib


@pytest.mark.parametrize("n,brute,leaves,soar", [
    (5_000, True, 0, None),
    (50_000, False, 0, None),
    (250_000, False, 500, None),
    (1_000_000, False, 1000, 1.0),
])
def test_size_rules(n, brute, leaves, soar):
    c = config_lib.for_size(n, distance="cosine")
    assert c.brute_force is brute
    assert c.num_leaves == leaves  # about sqrt(n)
    assert c.soar_lambda == soar
    assert c.distance == "cosine"
    if not brute:
        assert c.anisotropic_threshold == 0.2 and c.reorder > 0


def test_overrides_replace_the_rule():
    c = config_lib.for_size(250_000, num_leaves=100, num_leaves_to_search=7, reorder=0)
    assert (c.num_leaves, c.num_leaves_to_search, c.reorder) == (100, 7, 0)


def test_round_trip():
    c = config_lib.for_size(1_000_000)
    assert config_lib.IndexConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("kwargs,match", [
    (dict(distance="l2"), "distance must be one of .* got 'l2'"),
    (dict(num_leaves=10, num_leaves_to_search=11), "num_leaves_to_search .* got 11"),
    (dict(reorder=-1), "reorder must be an int >= 0, got -1"),
    (dict(soar_lambda=1.0), "soar_lambda=1.0 needs num_leaves"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        config_lib.IndexConfig(**kwargs)


def test_bad_size():
    with pytest.raises(ValueError, match="num_items must be a positive int, got 0"):
        config_lib.for_size(0)
    with pytest.raises(ValueError, match="unknown IndexConfig fields"):
        config_lib.IndexConfig.from_dict({"leaves": 3})
