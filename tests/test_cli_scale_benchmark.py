"""benchmarks/cli_scale.py: the log it writes is what the CLI reads, with string ids,
the planted model's shape and an items.csv that may hold items nobody used."""

import csv
import importlib.util
import os

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "cli_scale.py")
_spec = importlib.util.spec_from_file_location("twotower_bench_cli_scale", _PATH)
cs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cs)


def test_the_planted_csv_log_has_string_ids_and_every_user_its_rows(tmp_path):
    oracle = cs.write_csv_log(str(tmp_path), 2_000, 3_000, 20, table_items=5_000)
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2_000 and set(rows[0]) == {"user_id", "item_id", "timestamp"}
    users = {}
    for r in rows:
        assert r["user_id"].startswith("u") and r["item_id"].startswith("i")
        assert 0 <= int(r["item_id"][1:]) < 3_000
        users.setdefault(r["user_id"], set()).add(int(r["timestamp"]))
    assert len(users) == 100 and all(len(t) == 20 for t in users.values())  # distinct times
    with open(tmp_path / "items.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 5_000 and table[4_999]["item_id"] == "i4999"
    assert {r["category"] for r in table} <= {f"c{c}" for c in range(100)}
    assert 0.0 < oracle <= 1.0


def test_size_keys_are_the_metrics_spelling():
    assert cs.size_key(10_000) == "1e4" and cs.size_key(1_000_000) == "1e6"
    assert cs.size_key(3_000_000) == "3e6"
