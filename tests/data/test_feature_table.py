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


def _big_rows(n):
    """n rows of an items table, built by hand: (id, category, title, price, tags)."""
    rows = []
    for i in range(n):
        price = "" if i % 13 == 0 else ("NA" if i % 29 == 0 else f"{i * 0.5:g}")
        tags = "|".join(f"t{(i + j) % 17}" for j in range(i % 4))
        rows.append((f"it{i:06d}", f" c{i % 37} ", f"word{i % 101} thing {i}", price,
                     tags + ("| " if i % 7 == 0 and tags else "")))
    return rows


def test_a_large_table_reads_and_aligns_as_a_reference_built_by_hand(tmp_path):
    """10^5 rows (blank lines, padded values, missing numbers, ragged multi-hot sets)
    read into arrays, then aligned to shuffled ids with unknown ones mixed in: every cell
    as a per-row Python reference says."""
    n = 100_000
    rows = _big_rows(n)
    p = tmp_path / "items.csv"
    with open(p, "w") as f:
        f.write("item_id,category,title,price,tags\n")
        for i, r in enumerate(rows):
            f.write(",".join(r) + "\n")
            if i % 9999 == 0:
                f.write("\n , , , , \n")          # blank lines are no rows
    t = F.read_feature_table(str(p), "item_id")
    assert t.kinds == {"category": "categorical", "title": "text", "price": "numeric",
                       "tags": "multi_hot"}
    assert len(t) == n and t.ids.dtype.kind == "U"
    assert all(t.columns[c].dtype.kind == "U" for c in ("category", "title", "tags"))
    assert t.columns["price"].dtype == np.float64
    ref = {r[0]: r for r in rows}
    rng = np.random.default_rng(0)
    ids = np.concatenate([np.asarray([r[0] for r in rows])[rng.permutation(n)[: n // 2]],
                          np.asarray(["unknown", "it999999x"])])
    rng.shuffle(ids)
    cols = t.aligned(ids)
    prices = [float(r[3]) for r in rows if r[3] not in ("", "NA")]
    mean = np.mean(prices)
    want_cat = [ref[i][1].strip() if i in ref else "" for i in ids]
    want_title = [ref[i][2] if i in ref else "" for i in ids]
    want_price = [float(ref[i][3]) if i in ref and ref[i][3] not in ("", "NA") else mean
                  for i in ids]
    want_tags = [[x.strip() for x in ref[i][4].split("|") if x.strip()] if i in ref else []
                 for i in ids]
    width = max(len(x) for x in want_tags)
    assert cols["category"].tolist() == want_cat
    assert cols["title"].tolist() == want_title
    np.testing.assert_allclose(cols["price"], want_price, rtol=1e-6)
    assert cols["tags"].shape == (len(ids), width) == (len(ids), 3)
    assert cols["tags"].tolist() == [x + [""] * (width - len(x)) for x in want_tags]
    text = t.summary()
    assert "(inferred; 37 distinct values)" in text and "(inferred; 17 distinct tokens)" in text
    assert f"{sum(1 for r in rows if r[3] in ('', 'NA'))} missing" in text


def test_a_large_table_names_the_line_of_a_duplicate_or_bad_value(tmp_path):
    n = 100_000
    lines = ["item_id;price"] + [f"i{j};{j}" for j in range(n)]
    lines.insert(5, "")                                          # a blank line: line 6
    dup = list(lines)
    dup[70_000] = "i123;5"                       # i123 is on line 126 (after the blank)
    p = tmp_path / "dup.csv"
    p.write_text("\n".join(dup) + "\n")
    with pytest.raises(ValueError, match=r"dup\.csv: duplicate item_id 'i123' at lines 126 "
                                         r"and 70001$"):
        F.read_feature_table(str(p), "item_id")
    bad = list(lines)
    bad[90_000] = "i_x;12 euros"
    q = tmp_path / "bad.csv"
    q.write_text("\n".join(bad) + "\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 90001: numeric column 'price' "
                                         r"holds '12 euros'"):
        F.read_feature_table(str(q), "item_id", numeric="price")
    # inferred, the same column is text: no error
    assert F.read_feature_table(str(q), "item_id").kinds == {"price": "categorical"}
    empty = list(lines)
    empty[50_000] = " ;7"
    e = tmp_path / "empty.csv"
    e.write_text("\n".join(empty) + "\n")
    with pytest.raises(ValueError, match=r"empty\.csv: line 50001: empty 'item_id'"):
        F.read_feature_table(str(e), "item_id")


def test_ragged_lines_quoted_fields_and_integer_id_spellings(tmp_path):
    p = tmp_path / "ragged.csv"
    p.write_text("item_id,c,d\na,1,2\n   \nb,2\n")
    with pytest.raises(ValueError, match=r"ragged\.csv: line 4 has 2 fields, the header has 3"):
        F.read_feature_table(str(p), "item_id")
    q = tmp_path / "quoted.csv"
    q.write_text('item_id,title\n1,"two\nlines, and a comma"\n2,"say ""hi"""\n')
    t = F.read_feature_table(str(q), "item_id", text="title")
    assert t.ids.tolist() == [1, 2]
    assert t.columns["title"].tolist() == ["two\nlines, and a comma", 'say "hi"']
    z = tmp_path / "zero.csv"
    z.write_text("user_id,age\n0,3\n-0,4\n")
    with pytest.raises(ValueError, match=r"duplicate user_id '-0' at lines 2 and 3"):
        F.read_feature_table(str(z), "user_id")
    # a number Python reads and Arrow does not is still a number
    u = tmp_path / "under.csv"
    u.write_text("item_id,price\na,1_000\nb,2\n")
    t = F.read_feature_table(str(u), "item_id")
    assert t.kinds == {"price": "numeric"} and t.columns["price"].tolist() == [1000.0, 2.0]


def test_aligned_accepts_object_and_integer_queries(tmp_path):
    p = tmp_path / "u.csv"
    p.write_text("user_id,country,tags\n7,FR,a\n12,US,b|c\n")
    t = F.read_feature_table(str(p), "user_id")
    assert t.aligned(np.asarray([12, 5, 7], dtype=object))["country"].tolist() == ["US", "", "FR"]
    assert t.aligned(np.asarray(["7"]))["country"].tolist() == [""]   # "7" is not 7
    assert t.aligned(np.asarray([7, 9], np.int32))["country"].tolist() == ["FR", ""]
    assert t.aligned(np.asarray([], np.int64))["tags"].shape == (0, 1)


def test_a_long_tailed_text_column_is_not_padded_to_its_longest_value(tmp_path):
    """One 10,000-character title among short ones: as fixed-width strings every row
    would take 40 KB; the column is kept as Python strings instead, each its own size."""
    path = tmp_path / "items.csv"
    lines = ["item_id,title,brand"] + [
        f"i{i},{'word ' * (2000 if i == 7 else 5)},b{i % 50}" for i in range(2000)]
    path.write_text("\n".join(lines) + "\n")
    table = F.read_feature_table(str(path), "item_id", infer=True)
    assert table.kinds == {"title": "text", "brand": "categorical"}
    assert table.columns["title"].dtype == object and table.columns["brand"].dtype.kind == "U"
    aligned = table.aligned(np.array(["i7", "i3", "nope"]))
    assert [len(v) for v in aligned["title"]] == [9999, 24, 0]
    assert aligned["brand"].tolist() == ["b7", "b3", ""]
