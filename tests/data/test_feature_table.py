"""Tests for twotower.data.feature_table: reading, kind inference, alignment, errors."""

import numpy as np
import pytest

from twotower.data import feature_table as F

ITEMS = ("item_id,category,title,price,tags,brand\n"
         "item_001,shoes,Red running shoe for the road,10.5,a|b,acme\n"
         "item_002,shoes,Blue trail shoe for hills,12,b,acme\n"
         "item_003,hats,Green summer hat with a brim,,c,zeta\n"
         "item_004,hats,Never bought winter hat,3,,zeta\n")


@pytest.fixture
def items_csv(tmp_path):
    p = tmp_path / "items.csv"
    p.write_text(ITEMS)
    return str(p)


def test_kinds_are_inferred_and_summarised(items_csv):
    t = F.read_feature_table(items_csv, "item_id")
    assert t.kinds == {"category": "categorical", "title": "text", "price": "numeric",
                       "tags": "multi_hot", "brand": "categorical"}
    assert set(t.inferred) == set(t.kinds)
    assert t.ids.tolist() == ["item_001", "item_002", "item_003", "item_004"]
    assert np.isnan(t.columns["price"][2])
    text = t.summary()
    assert "items.csv: 4 rows keyed by 'item_id'" in text
    assert "price" in text and "numeric" in text and "(inferred; 3..12, 1 missing)" in text
    assert "category" in text and "(inferred; 2 distinct values)" in text


def test_infer_kind_rules():
    assert F.infer_kind(["1", "2.5", ""]) == "numeric"
    assert F.infer_kind(["Action|Comedy", "Drama"]) == "multi_hot"
    assert F.infer_kind(["US", "FR", "US", "DE"]) == "categorical"
    assert F.infer_kind(["a long product description here", "another one, quite long"]) == "text"
    assert F.infer_kind(["two words", "two words", "two words"]) == "categorical"


def test_named_kinds_win_and_no_infer_reads_only_them(items_csv):
    t = F.read_feature_table(items_csv, "item_id", categorical="price", text=["brand"],
                             infer=False)
    assert t.kinds == {"price": "categorical", "brand": "text"} and t.inferred == ()
    assert "(named;" in t.summary()


def test_errors_name_file_flag_line_and_value(items_csv, tmp_path):
    with pytest.raises(ValueError, match=r"--item-text 'nope': .*items\.csv has no such column"):
        F.read_feature_table(items_csv, "item_id", text="nope")
    with pytest.raises(ValueError, match=r"no key column 'sku'"):
        F.read_feature_table(items_csv, "sku")
    with pytest.raises(ValueError, match=r"line 2: numeric column 'category' holds 'shoes'"):
        F.read_feature_table(items_csv, "item_id", numeric="category")
    with pytest.raises(ValueError, match=r"named as both categorical and text"):
        F.read_feature_table(items_csv, "item_id", categorical="brand", text="brand")
    dup = tmp_path / "dup.csv"
    dup.write_text("item_id,c\nx,1\ny,2\nx,3\n")
    with pytest.raises(ValueError, match=r"duplicate item_id 'x' at lines 2 and 4"):
        F.read_feature_table(str(dup), "item_id")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        F.read_feature_table(str(empty), "item_id")
    bad = tmp_path / "latin.csv"
    bad.write_bytes(b"item_id,c\nx,caf\xe9\n")
    with pytest.raises(ValueError, match=r"latin\.csv: line 2 is not valid UTF-8"):
        F.read_feature_table(str(bad), "item_id")
    with pytest.raises(FileNotFoundError):
        F.read_feature_table(str(tmp_path / "missing.csv"), "item_id")


def test_aligned_fills_missing_ids_and_pads_multi_hot(items_csv):
    t = F.read_feature_table(items_csv, "item_id")
    cols = t.aligned(np.asarray(["item_003", "unknown", "item_001"]))
    assert cols["category"].tolist() == ["hats", "", "shoes"]
    mean = np.mean([10.5, 12, 3])
    np.testing.assert_allclose(cols["price"], [mean, mean, 10.5], rtol=1e-6)
    assert cols["tags"].tolist() == [["c", ""], ["", ""], ["a", "b"]]


def test_integer_keys(tmp_path):
    p = tmp_path / "u.csv"
    p.write_text("user_id,age,country\n7,31,FR\n12,45,US\n")
    t = F.read_feature_table(str(p), "user_id", flag_prefix="--user")
    assert t.ids.dtype == np.int64 and t.ids.tolist() == [7, 12]
    assert t.aligned(np.asarray([12]))["age"].tolist() == [45.0]


def test_null_markers_are_values_except_in_numeric_columns(tmp_path):
    """Ids and categorical values 'NA', 'null', 'N/A' are values as written; a numeric
    column reads them (and NaN) as missing, like an empty cell."""
    p = tmp_path / "items.csv"
    p.write_text("item_id,country,price,rank\n"
                 "NA,NA,3,1\nnull,US,NaN,2\nN/A,,n/a,NA\nb,null,5,4\n")
    t = F.read_feature_table(str(p), "item_id")
    assert t.ids.tolist() == ["NA", "null", "N/A", "b"]
    assert t.kinds == {"country": "categorical", "price": "numeric", "rank": "numeric"}
    assert t.columns["country"].tolist() == ["NA", "US", "", "null"]
    np.testing.assert_array_equal(t.columns["price"], [3, np.nan, np.nan, 5])
    assert "(inferred; 3..5, 2 missing)" in t.summary()
    assert t.aligned(np.asarray(["null"]))["price"].tolist() == [4.0]  # the mean
    # an all-marker column is not numeric; a named numeric column still refuses text
    assert F.infer_kind(["NA", "NA", ""]) == "categorical"
    q = tmp_path / "bad.csv"
    q.write_text("item_id,price\na,3\nb,cheap\n")
    with pytest.raises(ValueError, match=r"line 3: numeric column 'price' holds 'cheap'"):
        F.read_feature_table(str(q), "item_id", numeric="price")


def test_delimiter_detected_and_headerless_table_refused(tmp_path):
    p = tmp_path / "users.tsv"
    p.write_text("user_id\tcountry\tage\nu1\tFR\t31\nu2\tUS\t45\n")
    t = F.read_feature_table(str(p), "user_id", flag_prefix="--user")
    assert t.kinds == {"country": "categorical", "age": "numeric"}
    s = tmp_path / "items.csv"
    s.write_text("item_id;tags\na;x|y\nb;z\n")
    assert F.read_feature_table(str(s), "item_id").kinds == {"tags": "multi_hot"}
    h = tmp_path / "nohdr.csv"
    h.write_text("7,31,FR\n12,45,US\n")
    with pytest.raises(ValueError, match=r"nohdr\.csv: the file appears to have no header "
                                         r"line.*'user_id,column2,column3'"):
        F.read_feature_table(str(h), "user_id")
