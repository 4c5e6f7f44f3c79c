import numpy as np
import pytest

import twotower  # noqa: F401
from twotower.index import ExternalIds, UnknownIdError
from twotower.data.external_ids import check_ids_list, check_int_ids


def test_string_vocabulary_both_ways_and_extension():
    vocab = ExternalIds(["u7", "u3", "x"])
    assert vocab.kind == "str" and vocab.values.dtype.kind == "U" and len(vocab) == 3
    np.testing.assert_array_equal(vocab.lookup(["x", "u7"]), [2, 0])
    np.testing.assert_array_equal(vocab.external([[2, -1]]), [["x", ""]])  # "" pads
    pos, added = vocab.extend(["n", "u3", "n"])
    np.testing.assert_array_equal(pos, [3, 1, 3])
    assert added == 1 and list(vocab.values) == ["u7", "u3", "x", "n"]
    assert "n" in vocab and "q" not in vocab and 3 not in vocab
    with pytest.raises(UnknownIdError, match=r"unknown item id 'q' \(4 items known\)") as e:
        vocab.lookup(["x", "q"])
    assert e.value.ids == ["q"] and isinstance(e.value, ValueError)
    with pytest.raises(ValueError, match="must be string ids .* got 5"):
        vocab.lookup([5])
    with pytest.raises(ValueError, match="all strings or all integers, got 1 "):
        vocab.lookup(["a", 1])


def test_integer_vocabulary_and_many_extensions_stay_consistent():
    vocab = ExternalIds(np.array([50, 9, 2]), what="user")
    np.testing.assert_array_equal(vocab.lookup([2, 50]), [2, 0])
    np.testing.assert_array_equal(vocab.external(np.array([0, -1])), [50, -1])
    with pytest.raises(UnknownIdError, match="unknown user id -1") as e:
        vocab.lookup([-1])  # the pad is never a known id
    assert e.value.ids == [-1]
    with pytest.raises(ValueError, match="must be integer ids .* got '5'"):
        vocab.lookup(["5"])
    big = ExternalIds(np.arange(3000) * 7)
    pos, added = big.extend(np.arange(2990, 5000) * 7)  # past the re-sort threshold
    assert added == 2000  # 2,010 ids of which 10 were known
    np.testing.assert_array_equal(big.lookup(np.arange(5000) * 7), np.arange(5000))


@pytest.mark.parametrize("values, match", [
    ([1, 1], "duplicate ids"),
    (["a", ""], "empty string"),
    ([3, -1], r">= 0 \(-1 pads results\), got -1"),
    ([1.5, 2.0], "all strings or all integers, got 1.5"),
    ([True, False], "got True"),
    ([2 ** 70], "outside int64"),
    (np.zeros((2, 2), np.int64), "flat list"),
])
def test_bad_vocabularies(values, match):
    with pytest.raises(ValueError, match=match):
        ExternalIds(values)


@pytest.mark.parametrize("ids, match", [
    ([100.9], "float value 100.9"),
    (np.array([1.0]), "float value 1.0"),
    ([True], "bool value True"),
    ([2 ** 70], "got 1180591620717411303424 .outside int64"),
    ([1, 2 ** 70], "outside int64"),
    (np.array([2 ** 64 - 1], np.uint64), "outside int64"),
    (["3"], "str value '3'"),
    ([[1, 2]], "flat list"),
])
def test_check_int_ids_refuses_what_is_not_an_int64_id(ids, match):
    with pytest.raises(ValueError, match="exclude must be .*" + match):
        check_int_ids(ids, "exclude")


def test_check_int_ids_accepts_ints():
    np.testing.assert_array_equal(check_int_ids([3, np.int32(4), 2 ** 62]), [3, 4, 2 ** 62])
    assert check_int_ids(7).tolist() == [7]
    assert check_int_ids([]).dtype == np.int64
    with pytest.raises(ValueError, match="item_ids is empty"):
        check_int_ids([], allow_empty=False)
    with pytest.raises(ValueError, match=r"must have one entry per query \(2\), got 1"):
        check_ids_list([[1]], "exclude", 2)
