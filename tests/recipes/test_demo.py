import json
import os

import pytest

import twotower  # noqa: F401


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    from twotower.recipes import demo

    out = str(tmp_path / "demo")
    assert demo.main(["--out", out, "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    assert "Movies like Star Wars (1977)" in text and "User 1 " in text
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["reload_same_ids"] == 1 and metrics["saved_model_same_ids"] == 1
    # every user's served top 10 leaves out every movie of their log, the last one too
    assert metrics["served_own_items_returned"] == 0
    assert metrics["i2i_agreement@10"] > metrics["popularity_i2i_agreement@10"]
    assert metrics["index_vs_exact_recall@10"] >= 0.95
    # the index's own answers score as the exact evaluation does
    assert metrics["index_recall@10"] == pytest.approx(metrics["model_recall@10"], abs=0.01)
    for name in ("index/manifest.json", "saved_model/saved_model.pb", "recall_at_k.png"):
        assert os.path.exists(os.path.join(out, name))


def test_demo_help_explains_every_flag(capsys):
    from twotower.recipes import demo

    with pytest.raises(SystemExit):
        demo.build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--out", "--overwrite", "--epochs", "--data", "--users", "--target-recall",
                 "--seed", "--checkpoint-dir", "--checkpoint-every"):
        assert flag in text


def test_demo_refuses_a_folder_it_did_not_write_before_training(tmp_path):
    from twotower.artifacts import OutputPathError
    from twotower.recipes import demo

    (tmp_path / "data.csv").write_text("the user's own file")
    with pytest.raises(OutputPathError, match="did not write"):
        demo.main(["--out", str(tmp_path), "--data", str(tmp_path / "never-read")])
    assert (tmp_path / "data.csv").read_text() == "the user's own file"
    with pytest.raises(ValueError, match="epochs must be an int >= 1, got 0"):
        demo.main(["--out", str(tmp_path / "new"), "--epochs", "0"])
