"""Checkpoint / resume of word2vec's SparseSGDTrainer: a run SIGKILLed at a random point
after its first checkpoint and started again with the same command ends where an
uninterrupted run ends.

What is bit-exact and why: the resumed process restores every variable (float32, saved
exactly), the step / element / example counters and the running loss; the example
stream is a deterministic function of (seed, epoch) and the consumed elements are
skipped; the hogwild engine (one thread) applies the examples in order and draws each
element's negatives from (seed, element); the batched engine's compiled step draws its
negatives statelessly from (seed, step), and XLA's CPU code for one shape is the same
program in both processes, whose scatters run in index order. So the step count and the run's mean loss (float64 repr) are compared
exactly — they matched bit for bit in every run here — and the final vectors to 1e-6,
room left only for a multi-threaded reduction whose partition could differ between
processes. Other models' samplers draw from TF's stateful ops: their resumed runs are
statistically, not bitwise, the same (training/sgd_trainer.py)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import twotower  # noqa: F401
    import twotower.training.word2vec_trainer as w2v
    from twotower.training.word2vec_trainer import (DataConfig, ModelConfig, TrainConfig, set_threads,
                                          train_word2vec, word_vectors)
    w2v.HOGWILD_ELEMENT_EXAMPLES = 64  # many small elements: a kill can land mid-run
    corpus, ckpt, out = sys.argv[1:4]
    set_threads(1)
    sentences = [line.split() for line in open(corpus)]
    train = TrainConfig(epochs=6, batch_size=32, steps_per_call=2, alpha=0.05, seed=3,
                        checkpoint_dir=ckpt, checkpoint_every=10, engine=sys.argv[4],
                        threads=1)
    vocab, model, stats = train_word2vec(
        sentences, DataConfig(min_count=1), ModelConfig(dim=8, window=2, sample=0), train,
        progress=False)
    np.save(out, word_vectors(model, "sg"))
    print("RESUMED_FROM", stats["resumed_from_element"], "STEPS", stats["steps"],
          "LOSS", repr(stats["mean_loss"]), flush=True)
""")


def planted_corpus(path, seed=0):
    rng = np.random.default_rng(seed)
    topics = [[f"t{t}w{i}" for i in range(5)] for t in range(4)]
    with open(path, "w") as f:
        for s in range(120):
            f.write(" ".join(rng.choice(topics[s % 4], 6)) + "\n")


def run(script, corpus, ckpt, out, engine):
    return subprocess.run([sys.executable, script, corpus, ckpt, out, engine],
                          capture_output=True, text=True, timeout=300)


def latest_step(ckpt):
    try:
        with open(os.path.join(ckpt, "checkpoint")) as f:
            first = f.readline()
    except OSError:
        return None
    return int(first.rsplit("-", 1)[-1].strip().strip('"')) if "-" in first else None


# The default engine (hogwild, one thread: its negatives are drawn from (seed, element),
# its examples applied in order) in every run; the batched engine's resume with the slow
# checks (each case starts three TensorFlow processes).
@pytest.mark.parametrize("engine", ["hogwild", pytest.param("batched", marks=pytest.mark.slow)])
def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path, engine):
    script, corpus = str(tmp_path / "child.py"), str(tmp_path / "corpus.txt")
    with open(script, "w") as f:
        f.write(CHILD)
    planted_corpus(corpus)
    full = run(script, corpus, str(tmp_path / "ckpt_full"), str(tmp_path / "full.npy"), engine)
    assert full.returncode == 0, full.stderr[-2000:]
    total_steps = int(full.stdout.split("STEPS")[1].split()[0])

    # Kill when the latest checkpoint is at a random step of the first 60 % of the run.
    ckpt = str(tmp_path / "ckpt")
    kill_at = int(np.random.default_rng().integers(10, max(11, int(0.6 * total_steps))))
    args = [sys.executable, script, corpus, ckpt, str(tmp_path / "resumed.npy"), engine]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        step = latest_step(ckpt)
        if step is not None and step >= kill_at:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = run(script, corpus, ckpt, str(tmp_path / "resumed.npy"), engine)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not resumed.stdout.startswith("RESUMED_FROM 0 ")     # it did resume
    a, b = np.load(tmp_path / "full.npy"), np.load(tmp_path / "resumed.npy")
    np.testing.assert_allclose(b, a, atol=1e-6, rtol=0)
    assert full.stdout.split("STEPS")[1] == resumed.stdout.split("STEPS")[1]  # steps, loss


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    import pytest
    import twotower  # noqa: F401
    from twotower.training.word2vec_trainer import DataConfig, ModelConfig, TrainConfig, train_word2vec

    planted_corpus(tmp_path / "c.txt")
    sentences = [line.split() for line in open(tmp_path / "c.txt")]
    ckpt = str(tmp_path / "ckpt")
    kw = dict(epochs=1, batch_size=64, steps_per_call=2, checkpoint_dir=ckpt)
    train_word2vec(sentences, DataConfig(min_count=1), ModelConfig(dim=4, window=2, sample=0),
                   TrainConfig(alpha=0.05, **kw), progress=False)
    with pytest.raises(ValueError, match="holds a run with other settings .*alpha"):
        train_word2vec(sentences, DataConfig(min_count=1),
                       ModelConfig(dim=4, window=2, sample=0), TrainConfig(alpha=0.1, **kw),
                       progress=False)
