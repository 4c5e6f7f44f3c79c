"""Training survives a kill: SIGKILL a recipe after its first checkpoint, rerun the same
command, and the final metrics equal an uninterrupted run with the same seed.

The youtube recipe with ``--oov-rate 0`` has no random op inside its training step (its
in-batch candidates and streaming logQ are deterministic given the batches), so a
resumed run must end with the same weights: what this checks is that the checkpoint
holds weights, optimizer slots and the frequency estimator's state, and that the input
stream resumes at the step where the checkpoint was taken (recipes/two_tower_kit.py
``fit`` states what is not bit-exact when the step draws random numbers).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

import twotower  # noqa: F401

from twotower.recipes import youtube

# timing figures and the resume bookkeeping differ by design
VARIABLE_KEYS = {"examples_per_sec", "train_seconds", "index_qps", "index_build_s",
                 "resumed_at_step", "peak_rss_gb"}


def _command(data, out, checkpoints, optimizer="auto"):
    source = ["--interactions", data] if data.endswith(".csv") else ["--data", data]
    return [*source, "--epochs", "4", "--batch-size", "32", "--dim", "8",
            "--lr", "0.02", "--oov-rate", "0", "--seed", "3", "--out", out,
            "--checkpoint-dir", checkpoints, "--checkpoint-every", "3", "--no-export",
            "--optimizer", optimizer]


def _run(args, work=None, **kwargs):
    # work: where a CSV log's out-of-core work folder goes (a killed run leaves it)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               **({"TWOTOWER_DATA": work} if work else {}))
    return subprocess.Popen([sys.executable, "-m", "twotower.cli", "youtube", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **kwargs)


def _as_log(folder, path):
    """The planted MovieLens ratings as a user's own CSV log (read out of core: the
    training rows streamed from shards, data/sharded_split.py)."""
    with open(os.path.join(folder, "u.data")) as f, open(path, "w") as out:
        out.write("user_id,item_id,timestamp\n")
        for line in f:
            u, i, _, t = line.split()
            out.write(f"u{u},i{i},{t}\n")
    return str(path)


# auto: dense Adam under XLA on these small tables; lazy_adam: the large catalogues' road;
# log: a CSV log, whose training rows stream from shards
@pytest.mark.parametrize("optimizer,source", [("auto", "ml"), ("lazy_adam", "ml"),
                                              ("auto", "log")])
def test_sigkill_then_rerun_matches_an_uninterrupted_run(planted_ml100k, tmp_path, optimizer,
                                                         source):
    ckpt = str(tmp_path / "ckpt")
    out = str(tmp_path / "resumed")
    data = planted_ml100k if source == "ml" else _as_log(planted_ml100k, tmp_path / "log.csv")
    args = _command(data, out, ckpt, optimizer)
    work = str(tmp_path / "work")
    os.makedirs(work)
    proc = _run(args, work)
    state_file = os.path.join(ckpt, "chief", "checkpoint")
    deadline = time.monotonic() + 240
    while not os.path.exists(state_file):
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.3))  # a random point after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(out, "metrics.json"))  # killed while training
    # what the checkpoint holds: the estimator's arrays, Adam's slots, the loss history
    import tensorflow as tf

    names = [n for n, _ in tf.train.list_variables(os.path.join(ckpt, "chief"))]
    for part in ("frequency_estimator/last_seen", "frequency_estimator/delta",
                 "optimizer/_iterations", "_twotower_fit_state/epoch_loss"):
        assert any(part in n for n in names), (part, names)
    trainable = sum("tower/" in n for n in names)
    assert sum("optimizer/_variables/" in n for n in names) == 2 * trainable  # Adam m, v

    rerun = _run(args, work)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()[-2000:]
    resumed = json.load(open(os.path.join(out, "metrics.json")))
    assert resumed["resumed_at_step"] > 0  # it did restore a checkpoint
    assert not os.path.exists(os.path.join(ckpt, "chief"))  # removed once training ended
    assert not os.listdir(ckpt)

    # the same command uninterrupted, in this process (no checkpoint folder needed)
    ref_out = str(tmp_path / "reference")
    ref_args = _command(data, ref_out, str(tmp_path / "ref-ckpt"), optimizer)
    assert youtube.main(ref_args) == 0
    reference = json.load(open(os.path.join(ref_out, "metrics.json")))
    assert reference["resumed_at_step"] == 0

    assert set(resumed) == set(reference)
    for key in sorted(k for k in set(reference) - VARIABLE_KEYS
                      if not k.startswith(("seconds_", "peak_rss_gb_"))):  # per phase
        assert resumed[key] == pytest.approx(reference[key], rel=1e-4, abs=1e-5), key


def test_a_different_run_in_the_checkpoint_dir_is_refused(planted_ml100k, tmp_path):
    from twotower.recipes import two_tower_kit as common
    from twotower.training import resumable_fit

    ckpt = tmp_path / "ckpt"
    config = youtube.Config(source=planted_ml100k, batch_size=32, checkpoint_dir=str(ckpt))
    resumable_fit._begin_checkpoints(config)
    other = youtube.Config(source=planted_ml100k, batch_size=64, checkpoint_dir=str(ckpt))
    with pytest.raises(ValueError, match=r"different run \(batch_size: 32 there, 64 now\)"):
        resumable_fit._begin_checkpoints(other)
    # the flags that do not change the result may change
    resumable_fit._begin_checkpoints(youtube.Config(source=planted_ml100k, batch_size=32,
                                             checkpoint_dir=str(ckpt), checkpoint_every=7))


def test_a_checkpoint_dir_of_the_users_is_refused(tmp_path):
    from twotower.artifacts import OutputPathError

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputPathError, match="--checkpoint-dir"):
        youtube.main(["--checkpoint-dir", str(mine)])
    assert (mine / "notes.txt").read_text() == "keep me"
