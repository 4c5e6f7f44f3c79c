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
(training/sgd_trainer.py). The word vectors are the query tower's rows. The model and the
training loop live in the library (training/word2vec_trainer.py); this file is the CLI over them.

    twotower word2vec --corpus enwiki-sample --out out/w2v
    twotower word2vec --corpus text8 --arch cbow --head hs --out out/w2v-cbow-hs
    twotower word2vec --corpus my_corpus.txt --min-count 2 --out out/mine
    twotower serve out/mine/index        # then: curl -d '{"item_ids": ["king"]}' .../i2i
    twotower word2vec --corpus more_text.txt --resume-from out/mine/model --out out/mine2

A user's text file is tokenised as gensim's ``simple_preprocess`` roughly does, by
default: split on whitespace, lower-cased (--no-lowercase keeps case), punctuation at
either end of a token stripped (--no-strip-punctuation keeps it): "Liability." and
"liability" are one word. text8 and enwiki-sample come tokenised and keep their own
tokenisers. The settings are saved in model/tokenization.json.

Evaluation (WS353, SimLex-999, Google analogies) is over the pairs / questions whose words
are in the vocabulary; a score resting on fewer than --min-eval-pairs of them (20) is
printed with its count and marked as too few, and stored in metrics.json as
``<name>_too_few`` instead of ``<name>`` (ws353_spearman 1.0 from 4 pairs is noise).

Continuing training (--resume-from MODEL_DIR, a model/ folder this recipe wrote, or in
Python ``training.word2vec_trainer.load_model``): the saved model's architecture and head
are kept (the model flags are ignored); the vocabulary grows as gensim's
``build_vocab(update=True)``: every saved word keeps its id, vector and output row and
adds its new count, the new text's words with at least --min-count occurrences in it are
appended with fresh rows (``Vocabulary.grown``, ``word2vec_trainer.grow_model``), rarer
new words are dropped and their count is printed; the learning rate decays from --alpha
to --min-alpha again over the new run, as gensim's ``train`` on new sentences.

Writes to --out (which must be new, empty, or an earlier twotower output with
--overwrite; checked before any work): vectors.txt (word2vec text format, readable by
gensim's KeyedVectors.load_word2vec_format), vocab.tsv (word, count), model/ (the Keras
TwoTowerModel's config.json + weights.h5, vocab.json, tokenization.json;
training.word2vec_trainer.load_model reads it), index/ (a ScaNN cosine index of the word vectors,
tuned, with the words as its ids: ``twotower serve OUT/index``), metrics.json; prints
nearest neighbours of probe words and a table.
"""

import argparse
import json
import os
import sys

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)

from twotower.artifacts import atomic_directory
from twotower.command import run_as_main
from twotower.data.text_corpus import load_corpus
from twotower.data.word2vec_examples import ARCHS
from twotower.data.word2vec_format import write_word2vec_text
from twotower.metrics.word_vectors import (MIN_SUPPORT, evaluate_word_vectors,
                                           split_by_support)
from twotower.recipes.vector_export import (add_output_arguments, begin, build_vector_index,
                                            divergence_as_input_error, index_metrics,
                                            save_model_folder, save_vector_index,
                                            score_decimals)
from twotower.recipes.word2vec_flags import (add_training_arguments, add_vector_arguments,
                                             training_config)
from twotower.reporting import format_table, twotower_command, write_metrics
from twotower.training.word2vec_trainer import (WORD2VEC_HEADS, DataConfig,  # noqa: F401
                                                ModelConfig, TrainConfig, build_model,
                                                grow_model, load_model, nearest_neighbours,
                                                save_model, train_word2vec, validate,
                                                word_vectors)


TOKENIZATION_FILE = "tokenization.json"
BUILTIN_CORPORA = ("text8", "enwiki-sample")
DEFAULT_PROBES = ("king", "france", "computer", "music", "war", "river")


def build_parser():
    d, m, t = DataConfig(), ModelConfig(), TrainConfig()
    parser = argparse.ArgumentParser(
        prog="twotower word2vec",
        description="word2vec (skip-gram or CBOW; NEG, HS, NCE or sampled-softmax head) "
                    "trained as a two-tower model with word2vec's sparse SGD, on text8, the "
                    "enwiki extract or your own text file (lower-cased, punctuation stripped "
                    "by default); writes vectors.txt, the model (reloadable, trainable "
                    "further with --resume-from), a tuned ScaNN index of the words for "
                    "`twotower serve` and metrics.json (analogy, WS353, SimLex).")
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
    g.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=None,
                   help="lower-case a corpus file's tokens, as gensim's simple_preprocess "
                        "(default: on; with --resume-from, the saved model's setting; "
                        "text8 and enwiki-sample are lower-case already)")
    g.add_argument("--strip-punctuation", action=argparse.BooleanOptionalAction, default=None,
                   help="strip punctuation at either end of a corpus file's tokens "
                        "('Liability.' -> 'liability', '(software,' -> 'software'; tokens of "
                        "punctuation only dropped; inside a token it stays: don't, e-mail) "
                        "(default: on; with --resume-from, the saved model's setting)")
    g.add_argument("--resume-from", default=None, metavar="MODEL_DIR",
                   help="continue training a model/ folder written by this recipe on "
                        "--corpus: its architecture, head and dim are kept (the model flags "
                        "are ignored); its vocabulary grows as gensim's build_vocab(update="
                        "True): known words keep their vectors, new words with --min-count "
                        "occurrences in --corpus get fresh ones, rarer ones are dropped and "
                        "counted")
    g = parser.add_argument_group("model")
    g.add_argument("--arch", choices=ARCHS, default=m.arch,
                   help="sg: predict each context word from the centre; cbow: predict the "
                        "centre from the mean of its context (default %(default)s)")
    g.add_argument("--head", choices=WORD2VEC_HEADS, default=m.head,
                   help="loss head: neg (negative sampling), hs (hierarchical softmax), "
                        "nce, sampled-softmax (default %(default)s)")
    g.add_argument("--negative", type=int, default=m.negative,
                   help="k, negatives per example from unigram^0.75 (neg/nce/sampled-"
                        "softmax) (default %(default)s)")
    add_vector_arguments(g, dim=m.dim, window=m.window, sample=m.sample,
                         window_help="maximum window; each position draws a reduced window "
                                     "in 1..window",
                         sample_help="subsampling threshold t, keep prob (sqrt(f/t)+1)*t/f "
                                     "as in word2vec.c; 0 = off")
    g = add_training_arguments(
        parser, epochs=t.epochs, batch_size=t.batch_size,
        batch_help="batched engine: examples per sparse SGD step; gradients are summed, so larger batches are "
                   "faster but further from per-pair SGD; each row's summed step is bounded "
                   "(--curvature-cap / --row-step-cap), so 256-16384 all stay finite on the "
                   "enwiki extract")
    g.add_argument("--steps-per-call", type=int, default=t.steps_per_call,
                   help="SGD steps per TensorFlow call (default %(default)s)")
    g = add_output_arguments(parser)
    g.add_argument("--probe", default=",".join(DEFAULT_PROBES),
                   help="comma-separated words whose nearest neighbours are printed "
                        "(default %(default)s)")
    g.add_argument("--no-eval", action="store_true",
                   help="skip the analogy / WS353 / SimLex evaluation")
    g.add_argument("--min-eval-pairs", type=int, default=MIN_SUPPORT,
                   help="a similarity or analogy score on fewer in-vocabulary pairs / "
                        "questions is printed with its count, marked as too few and left out "
                        "of the headline (default %(default)s)")
    return parser


def configs_from_args(args):
    data = DataConfig(args.corpus, args.min_count, args.max_vocab_size, args.encoding_errors)
    model = ModelConfig(args.arch, args.head, args.negative, args.dim, args.window, args.sample)
    return data, model, training_config(args)


def read_tokenization(model_dir):
    """The tokenisation a model/ folder was trained with ({} when it was not recorded)."""
    path = os.path.join(model_dir, TOKENIZATION_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def tokenization_from_args(args, saved=None):
    """{"lowercase", "strip_punctuation"}: the flags when given, else the saved model's
    setting (--resume-from), else on."""
    saved = saved or {}
    out = {}
    for key in ("lowercase", "strip_punctuation"):
        value = getattr(args, key)
        out[key] = bool(saved.get(key, True) if value is None else value)
    return out


def dropped_words(sentences, vocab):
    """(tokens not in ``vocab``, distinct such words) of ``sentences``."""
    unknown = [w for s in sentences for w in s if w not in vocab.index]
    return len(unknown), len(set(unknown))


def print_evaluation(metrics, too_few, not_computed, min_support):
    """The headline table, then the scores left out of it, each with its count."""
    print(format_table([{"metric": k, "value": v} for k, v in sorted(metrics.items())]))
    for key, (value, count) in sorted(too_few.items()):
        what = ("question" if key.startswith("analogy") else "pair") + ("s" if count != 1 else "")
        stored = f"stored as {key}_too_few" if np.isfinite(value) else "not stored"
        print(f"too few to report: {key} {value:.4f} from {count} {what} in the vocabulary "
              f"(fewer than {min_support}; {stored}, not in the table)")
    if not_computed:
        print(f"not computed (no evaluation item in the vocabulary): {', '.join(not_computed)}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    data_config, model_config, train_config = configs_from_args(args)
    with divergence_as_input_error():
        out = begin(args)
        if isinstance(args.min_eval_pairs, bool) or args.min_eval_pairs < 1:
            raise ValueError(f"--min-eval-pairs must be an int >= 1, got {args.min_eval_pairs!r}")
        if args.resume_from is not None and not os.path.isdir(args.resume_from):
            raise ValueError(f"--resume-from {args.resume_from!r} is not a folder (give the "
                             f"model/ folder of an earlier twotower word2vec --out)")
        validate(data_config, model_config, train_config)
        resumed = None
        saved_tokenization = {}
        if args.resume_from is not None:
            resumed = load_model(args.resume_from, seed=train_config.seed)
            saved_tokenization = read_tokenization(args.resume_from)
        tokenization = tokenization_from_args(args, saved_tokenization)
        file_kwargs = {} if data_config.corpus in BUILTIN_CORPORA else tokenization
        sentences = load_corpus(data_config.corpus, encoding_errors=data_config.encoding_errors,
                                **file_kwargs)
        extra = {}
        if resumed is not None:
            model, old_vocab, model_config = resumed
            # gensim's build_vocab(update=True): known words keep their ids and rows, the
            # new text's words with --min-count occurrences join with fresh rows
            vocab = old_vocab.grown(sentences, min_count=data_config.min_count,
                                    max_vocab_size=data_config.max_vocab_size)
            if len(vocab) > len(old_vocab):
                model = grow_model(model, vocab, model_config, train_config.seed)
            n_dropped, n_words = dropped_words(sentences, vocab)
            print(f"continuing {args.resume_from}: vocabulary grown from {len(old_vocab)} to "
                  f"{len(vocab)} words (new words of the new text with at least --min-count "
                  f"{data_config.min_count} occurrences); {n_dropped} of "
                  f"{sum(len(x) for x in sentences)} tokens of the new text ({n_words} "
                  f"distinct words) are not in it and were dropped", flush=True)
            vocab, model, stats = train_word2vec(sentences, data_config, model_config,
                                                 train_config, progress=not args.quiet,
                                                 vocab=vocab, model_fn=lambda v: model)
            extra = {"resumed": 1, "new_words": len(vocab) - len(old_vocab),
                     "new_text_tokens_dropped": n_dropped,
                     "new_text_words_dropped": n_words}
        else:
            vocab, model, stats = train_word2vec(sentences, data_config, model_config,
                                                 train_config, progress=not args.quiet)
        vectors = word_vectors(model, model_config.arch)
        retriever, tuned, _ = build_vector_index(vectors, np.asarray(vocab.words, dtype=str),
                                                 target_recall=args.target_recall,
                                                 k=args.index_k, seed=train_config.seed,
                                                 progress=not args.quiet)
        metrics = dict(stats, epochs=train_config.epochs, dim=model_config.dim, **extra)
        metrics.update(index_metrics(retriever, tuned))
        too_few, not_computed = {}, []
        if not args.no_eval:
            headline, too_few, not_computed = split_by_support(
                evaluate_word_vectors(vocab.words, vectors), args.min_eval_pairs)
            metrics.update(headline)
        stored = dict(metrics, **{f"{k}_too_few": v for k, (v, _) in too_few.items()
                                  if np.isfinite(v)})
        with atomic_directory(out, overwrite=args.overwrite) as tmp:
            write_word2vec_text(os.path.join(tmp, "vectors.txt"), vocab.words, vectors)
            with open(os.path.join(tmp, "vocab.tsv"), "w", encoding="utf-8") as f:
                f.writelines(f"{w}\t{c}\n" for w, c in zip(vocab.words, vocab.counts))
            model_dir = os.path.join(tmp, "model")
            save_model_folder(model_dir, model, model_config, vocab)
            with open(os.path.join(model_dir, TOKENIZATION_FILE), "w", encoding="utf-8") as f:
                json.dump(dict(tokenization, applied=bool(file_kwargs)), f)
            save_vector_index(os.path.join(tmp, "index"), retriever, tuned,
                              {"recipe": "word2vec", "arch": model_config.arch,
                               "head": model_config.head})
            write_metrics(tmp, stored)
    probes = [p for p in args.probe.split(",") if p]
    missing = [p for p in probes if p not in vocab]
    for probe, neighbours in nearest_neighbours(vocab.words, vectors, probes).items():
        decimals = score_decimals([s for _, s in neighbours])
        print(f"{probe:>12}: " + ", ".join(f"{w} ({s:.{decimals}f})" for w, s in neighbours))
    if missing:
        print(f"probe words not in the vocabulary (skipped): {', '.join(missing)}")
    print_evaluation(metrics, too_few, not_computed, args.min_eval_pairs)
    print(f"wrote {out}  (serve the index: {twotower_command()} serve "
          f"{os.path.join(out, 'index')})")
    return 0


if __name__ == "__main__":
    sys.exit(run_as_main("word2vec", main))
