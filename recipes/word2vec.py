"""word2vec as the degenerate two-tower model (Mikolov et al., "Efficient Estimation of Word
Representations in Vector Space" and "Distributed Representations of Words and Phrases
and their Compositionality", 2013).

The query tower is the input embedding W (an IDTower over the centre word for skip-gram;
a PooledIDTower taking the mean of the context for CBOW), the item tower the output
embedding W' (an IDTower), and the loss a twotower.losses.RetrievalLoss:

    --head neg              NEG: k negatives per example from unigram^0.75, no logQ
    --head nce              NCE: the same draws, logits s − log(k·q(c))
    --head sampled-softmax  softmax over {positive} ∪ k draws, with logQ correction
    --head hs               hierarchical softmax on a Huffman tree of the counts

Examples come from reduced random windows over a corpus subsampled afresh every epoch
(data/word2vec_examples.py), and the optimiser is word2vec's: per-example SGD whose
learning rate decays linearly from --alpha to --min-alpha, applied as sparse row updates
(towers/sgd_trainer.py). The word vectors are the query tower's rows.

    twotower word2vec --corpus enwiki-sample --out out/w2v
    twotower word2vec --corpus text8 --arch cbow --head hs --out out/w2v-cbow-hs
    twotower word2vec --corpus my_corpus.txt --min-count 2 --out out/mine

Writes to --out: vectors.txt (word2vec text format, readable by gensim's
KeyedVectors.load_word2vec_format), vocab.tsv (word, count), model/ (the Keras
TwoTowerModel's weights and config), metrics.json; prints nearest neighbours of probe
words and a table.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from twotower.artifacts import atomic_directory
from twotower.data.samplers import UnigramSampler
from twotower.data.text_corpus import load_corpus
from twotower.data.vocab import Vocabulary
from twotower.data.word2vec_examples import ARCHS, Word2VecExamples
from twotower.data.word_eval import evaluate_word_vectors
from twotower.losses import HierarchicalSoftmax, RetrievalLoss, SampledNegatives
from twotower.reporting import format_table, write_metrics
from twotower.towers import IDTower, PooledIDTower, TwoTowerModel
from twotower.towers.sgd_trainer import SparseSGDTrainer

HEADS = ("neg", "hs", "nce", "sampled-softmax")
DEFAULT_PROBES = ("king", "france", "computer", "music", "war", "river")


@dataclasses.dataclass
class DataConfig:
    """Corpus and vocabulary: --corpus, --min-count, --max-vocab-size, --encoding-errors."""

    corpus: str = "enwiki-sample"
    min_count: int = 5
    max_vocab_size: int = None
    encoding_errors: str = "strict"


@dataclasses.dataclass
class ModelConfig:
    """Architecture, head and examples: --arch, --head, --negative, --dim, --window, --sample."""

    arch: str = "sg"
    head: str = "neg"
    negative: int = 5
    dim: int = 100
    window: int = 5
    sample: float = 1e-3


@dataclasses.dataclass
class TrainConfig:
    """Optimiser and runtime: --epochs, --alpha, --min-alpha, --batch-size, --seed, --threads."""

    epochs: int = 5
    alpha: float = 0.025
    min_alpha: float = 1e-4
    batch_size: int = 4096
    steps_per_call: int = 64
    seed: int = 1
    threads: int = 2


def validate(data, model, train):
    """Clear ValueErrors naming the flag and the value, before any work."""
    if model.arch not in ARCHS:
        raise ValueError(f"--arch must be one of {ARCHS}, got {model.arch!r}")
    if model.head not in HEADS:
        raise ValueError(f"--head must be one of {HEADS}, got {model.head!r}")
    checks = [("--min-count", data.min_count, 1), ("--negative", model.negative, 1),
              ("--dim", model.dim, 1), ("--window", model.window, 1),
              ("--epochs", train.epochs, 1), ("--batch-size", train.batch_size, 1),
              ("--steps-per-call", train.steps_per_call, 1), ("--threads", train.threads, 1)]
    for flag, value, low in checks:
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{flag} must be an int >= {low}, got {value!r}")
    if data.max_vocab_size is not None and data.max_vocab_size < 1:
        raise ValueError(f"--max-vocab-size must be >= 1, got {data.max_vocab_size!r}")
    if not model.sample >= 0:
        raise ValueError(f"--sample must be >= 0, got {model.sample!r}")
    if not (train.alpha > 0 and 0 <= train.min_alpha <= train.alpha):
        raise ValueError(f"--alpha must be > 0 and 0 <= --min-alpha <= --alpha, got "
                         f"alpha={train.alpha!r}, min_alpha={train.min_alpha!r}")
    if data.encoding_errors not in ("strict", "replace"):
        raise ValueError(f"--encoding-errors must be 'strict' or 'replace', got "
                         f"{data.encoding_errors!r}")


def build_model(vocab, model_config, seed):
    """The two-tower model of word2vec, initialised as word2vec.c does (W uniform in
    ±0.5/d, W' and the HS node vectors zero)."""
    V, d = len(vocab), model_config.dim
    init = tf.keras.initializers.RandomUniform(-0.5 / d, 0.5 / d, seed=seed)
    if model_config.arch == "sg":
        query_tower = IDTower(V, d, embeddings_initializer=init, validate_ids=False,
                              name="input_vectors")
        query_probe = tf.constant([0])
    else:  # row w + 1 is word w; 0 is padding
        query_tower = PooledIDTower(V + 1, d, pooling="mean", embeddings_initializer=init,
                                    validate_ids=False, name="input_vectors")
        query_probe = tf.constant([[1]])
    item_tower = IDTower(V, d, embeddings_initializer="zeros", validate_ids=False,
                         name="output_vectors")
    if model_config.head == "hs":
        loss = RetrievalLoss(HierarchicalSoftmax(vocab.counts, d), candidates=None)
    else:
        sampler = UnigramSampler(vocab.counts, 0.75, seed=seed)
        negatives = SampledNegatives(sampler, model_config.negative, shared=False)
        head = {"neg": "neg", "nce": "nce", "sampled-softmax": "softmax"}[model_config.head]
        # word2vec.c skips a negative equal to the positive: accidental hits are masked.
        loss = RetrievalLoss(head, negatives, logq=model_config.head != "neg",
                             remove_accidental_hits=True)
    model = TwoTowerModel(query_tower, item_tower, loss, name="word2vec")
    model({"query": query_probe, "item": tf.constant([0])})  # builds every weight
    if model_config.head == "hs":
        loss(query_tower(query_probe), None, tf.constant([0]))
    return model


def word_vectors(model, arch):
    """The input vectors W (one row per word, in vocabulary order)."""
    w = model.query_tower.embeddings.numpy()
    return w if arch == "sg" else w[1:]


def set_threads(threads):
    """Uses ``threads`` cores for TensorFlow (ignored once TF's runtime has started)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass


def train_word2vec(sentences, data_config, model_config, train_config, *, progress=True):
    """Vocabulary, model and training on tokenised ``sentences``.

    Returns (vocab, model, stats) with stats: tokens (raw corpus words), vocab_size,
    examples, seconds (vocabulary + training wall time), words_per_sec (tokens × epochs /
    seconds), mean_loss.
    """
    validate(data_config, model_config, train_config)
    if not sentences:
        raise ValueError(f"corpus {data_config.corpus!r} is empty: no sentences")
    start = time.perf_counter()
    tokens = sum(len(s) for s in sentences)
    vocab = Vocabulary.build(sentences, min_count=data_config.min_count,
                             max_vocab_size=data_config.max_vocab_size)
    ids, sentence_ids = vocab.encode(sentences)
    if len(ids) <= model_config.window:
        raise ValueError(f"corpus {data_config.corpus!r} has {len(ids)} in-vocabulary tokens, "
                         f"not more than --window={model_config.window}; use a larger corpus "
                         f"or a smaller window / --min-count")
    if not np.any(sentence_ids[1:] == sentence_ids[:-1]):
        raise ValueError(f"corpus {data_config.corpus!r} has no sentence with two "
                         f"in-vocabulary tokens: no training examples")
    tf.random.set_seed(train_config.seed)
    examples = Word2VecExamples(ids, sentence_ids, vocab.counts, arch=model_config.arch,
                                window=model_config.window, sample=model_config.sample,
                                seed=train_config.seed)
    model = build_model(vocab, model_config, train_config.seed)
    trainer = SparseSGDTrainer(model, alpha=train_config.alpha, min_alpha=train_config.min_alpha)
    dataset = examples.dataset(train_config.epochs, train_config.batch_size,
                               steps_per_element=train_config.steps_per_call)
    result = trainer.fit(dataset, progress=progress,
                         description=f"word2vec {model_config.arch}/{model_config.head}")
    seconds = time.perf_counter() - start
    stats = {"tokens": tokens, "vocab_size": len(vocab), "examples": result["examples"],
             "seconds": seconds, "words_per_sec": tokens * train_config.epochs / seconds,
             "mean_loss": result["mean_loss"]}
    return vocab, model, stats


def nearest_neighbours(words, vectors, probes, k=8):
    """{probe: [(word, cosine), ...]} for the probes in the vocabulary (others left out)."""
    index = {w: i for i, w in enumerate(words)}
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out = {}
    for probe in probes:
        if probe not in index:
            continue
        sims = unit @ unit[index[probe]]
        sims[index[probe]] = -np.inf
        top = np.argsort(-sims)[:k]
        out[probe] = [(words[i], float(sims[i])) for i in top]
    return out


def write_word2vec_text(path, words, vectors):
    """word2vec's text format: a "V d" header, then "word v_1 … v_d" per line."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, row in zip(words, vectors):
            f.write(word + " " + " ".join(f"{x:.6f}" for x in row) + "\n")


def save_model(folder, model, model_config):
    os.makedirs(folder, exist_ok=True)
    model.save_weights(os.path.join(folder, "weights.h5"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(model_config), f, indent=2)


def build_parser():
    d, m, t = DataConfig(), ModelConfig(), TrainConfig()
    parser = argparse.ArgumentParser(
        prog="twotower word2vec",
        description="word2vec (skip-gram or CBOW; NEG, HS, NCE or sampled-softmax head) "
                    "trained as a two-tower model with word2vec's sparse SGD; writes "
                    "vectors.txt, the model and metrics.json (analogy, WS353, SimLex).")
    g = parser.add_argument_group("data")
    g.add_argument("--corpus", default=d.corpus,
                   help="a plain-text file (one sentence per line, or one token stream), "
                        "'text8' (downloaded once and cached) or 'enwiki-sample' (the "
                        "Wikipedia extract in the gensim 4.4.0 wheel) (default %(default)s)")
    g.add_argument("--min-count", type=int, default=d.min_count,
                   help="drop words seen fewer times (default %(default)s)")
    g.add_argument("--max-vocab-size", type=int, default=d.max_vocab_size,
                   help="keep only this many most frequent words (default: all)")
    g.add_argument("--encoding-errors", choices=("strict", "replace"), default=d.encoding_errors,
                   help="non-UTF-8 bytes in a corpus file: refuse (strict) or replace "
                        "with U+FFFD (default %(default)s)")
    g = parser.add_argument_group("model")
    g.add_argument("--arch", choices=ARCHS, default=m.arch,
                   help="sg: predict each context word from the centre; cbow: predict the "
                        "centre from the mean of its context (default %(default)s)")
    g.add_argument("--head", choices=HEADS, default=m.head,
                   help="loss head: neg (negative sampling), hs (hierarchical softmax), "
                        "nce, sampled-softmax (default %(default)s)")
    g.add_argument("--negative", type=int, default=m.negative,
                   help="k, negatives per example from unigram^0.75 (neg/nce/sampled-"
                        "softmax) (default %(default)s)")
    g.add_argument("--dim", type=int, default=m.dim, help="vector size (default %(default)s)")
    g.add_argument("--window", type=int, default=m.window,
                   help="maximum window; each position draws a reduced window in "
                        "1..window (default %(default)s)")
    g.add_argument("--sample", type=float, default=m.sample,
                   help="subsampling threshold t, keep prob (sqrt(f/t)+1)*t/f as in "
                        "word2vec.c; 0 = off (default %(default)s)")
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=t.epochs, help="passes (default %(default)s)")
    g.add_argument("--alpha", type=float, default=t.alpha,
                   help="initial learning rate, decayed linearly (default %(default)s)")
    g.add_argument("--min-alpha", type=float, default=t.min_alpha,
                   help="final learning rate (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=t.batch_size,
                   help="examples per sparse SGD step; gradients are summed, so larger "
                        "batches are faster but further from per-pair SGD: on the enwiki "
                        "extract 256-4096 match gensim's quality and 16384 diverges "
                        "(default %(default)s)")
    g.add_argument("--steps-per-call", type=int, default=t.steps_per_call,
                   help="SGD steps per TensorFlow call (default %(default)s)")
    g.add_argument("--seed", type=int, default=t.seed, help="random seed (default %(default)s)")
    g.add_argument("--threads", type=int, default=t.threads,
                   help="CPU threads for TensorFlow (default %(default)s)")
    g = parser.add_argument_group("output")
    g.add_argument("--out", required=True, help="output folder (written atomically)")
    g.add_argument("--probe", default=",".join(DEFAULT_PROBES),
                   help="comma-separated words whose nearest neighbours are printed "
                        "(default %(default)s)")
    g.add_argument("--no-eval", action="store_true",
                   help="skip the analogy / WS353 / SimLex evaluation")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def configs_from_args(args):
    data = DataConfig(args.corpus, args.min_count, args.max_vocab_size, args.encoding_errors)
    model = ModelConfig(args.arch, args.head, args.negative, args.dim, args.window, args.sample)
    train = TrainConfig(args.epochs, args.alpha, args.min_alpha, args.batch_size,
                        args.steps_per_call, args.seed, args.threads)
    return data, model, train


def main(argv=None):
    args = build_parser().parse_args(argv)
    data_config, model_config, train_config = configs_from_args(args)
    try:
        validate(data_config, model_config, train_config)
        set_threads(train_config.threads)
        sentences = load_corpus(data_config.corpus, encoding_errors=data_config.encoding_errors)
        vocab, model, stats = train_word2vec(sentences, data_config, model_config,
                                             train_config, progress=not args.quiet)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"twotower word2vec: error: {e}", file=sys.stderr)
        return 2
    vectors = word_vectors(model, model_config.arch)
    metrics = dict(stats, epochs=train_config.epochs, dim=model_config.dim)
    not_computed = []
    if not args.no_eval:
        for key, value in evaluate_word_vectors(vocab.words, vectors).items():
            if np.isnan(value):  # e.g. no analogy question in vocabulary: left out, said so
                not_computed.append(key)
            else:
                metrics[key] = value
    probes = [p for p in args.probe.split(",") if p]
    missing = [p for p in probes if p not in vocab]
    with atomic_directory(args.out) as tmp:
        write_word2vec_text(os.path.join(tmp, "vectors.txt"), vocab.words, vectors)
        with open(os.path.join(tmp, "vocab.tsv"), "w", encoding="utf-8") as f:
            f.writelines(f"{w}\t{c}\n" for w, c in zip(vocab.words, vocab.counts))
        save_model(os.path.join(tmp, "model"), model, model_config)
        write_metrics(tmp, metrics)
    for probe, neighbours in nearest_neighbours(vocab.words, vectors, probes).items():
        print(f"{probe:>12}: " + ", ".join(f"{w} ({s:.2f})" for w, s in neighbours))
    if missing:
        print(f"probe words not in the vocabulary (skipped): {', '.join(missing)}")
    print(format_table([{"metric": k, "value": v} for k, v in sorted(metrics.items())]))
    if not_computed:
        print(f"not computed (no evaluation item in the vocabulary): {', '.join(not_computed)}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
