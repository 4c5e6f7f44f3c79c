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
(towers/sgd_trainer.py). The word vectors are the query tower's rows. The model and the
training loop live in the library (towers/word2vec.py); this file is the CLI over them.

    twotower word2vec --corpus enwiki-sample --out out/w2v
    twotower word2vec --corpus text8 --arch cbow --head hs --out out/w2v-cbow-hs
    twotower word2vec --corpus my_corpus.txt --min-count 2 --out out/mine

Writes to --out: vectors.txt (word2vec text format, readable by gensim's
KeyedVectors.load_word2vec_format), vocab.tsv (word, count), model/ (the Keras
TwoTowerModel's weights and config), metrics.json; prints nearest neighbours of probe
words and a table.
"""

import argparse
import os
import sys

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)

from twotower.artifacts import atomic_directory
from twotower.data.text_corpus import load_corpus
from twotower.data.word2vec_examples import ARCHS
from twotower.data.word2vec_format import write_word2vec_text
from twotower.data.word_eval import evaluate_word_vectors
from twotower.reporting import format_table, write_metrics
from twotower.towers.word2vec import (HEADS, DataConfig, ModelConfig, TrainConfig,  # noqa: F401
                                      add_training_arguments, build_model, nearest_neighbours,
                                      save_model, set_threads, train_word2vec, training_config,
                                      validate, word_vectors)

DEFAULT_PROBES = ("king", "france", "computer", "music", "war", "river")


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
    g = add_training_arguments(
        parser, epochs=t.epochs, batch_size=t.batch_size,
        batch_help="examples per sparse SGD step; gradients are summed, so larger batches are "
                   "faster but further from per-pair SGD: on the enwiki extract 256-4096 match "
                   "gensim's quality and 16384 diverges")
    g.add_argument("--steps-per-call", type=int, default=t.steps_per_call,
                   help="SGD steps per TensorFlow call (default %(default)s)")
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
    return data, model, training_config(args)


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
