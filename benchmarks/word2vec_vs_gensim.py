"""twotower word2vec vs gensim Word2Vec: same corpus, hyperparameters and cores, one process.

For each configuration (skip-gram + NEG is the headline; CBOW + NEG and skip-gram + HS
beside it) and each seed, gensim (workers=2) and ours train on the same tokenised
sentences, one after the other, and both sets of vectors go through the same evaluation
code (metrics/word_vectors.py: WS353 and SimLex-999 Spearman, 3CosAdd analogy accuracy on the
in-vocabulary questions of questions-words.txt). Speed is raw corpus words × epochs /
wall seconds of vocabulary building + training, for both, with each side's compiled code
loaded before the clock starts (gensim's Cython module by its import, our numba kernels
by ``load_kernels``: 0.36 s from numba's cache, once per process). Medians over seeds. Ours runs
its default engine (hogwild: word2vec.c's per-example update in --workers threads); the
batch-size sweep runs both engines, hogwild and the batched compiled step, at every
size. The example stream alone is timed too ({cfg}_generator_examples_per_sec, beside
{cfg}_ours_examples_per_sec), so that a reader sees the input is not the limit.

    python benchmarks/word2vec_vs_gensim.py --out out/bench_w2v
    python benchmarks/word2vec_vs_gensim.py --corpus text8 --epochs 5 --seeds 1 --out out/t8

Writes DIR/metrics.json (flat: ours_/gensim_ words_per_sec, ws353, simlex, analogy for
skip-gram + NEG; the same prefixed by the config name for every config; speed ratios)
and prints the table. gensim is a benchmark extra (pip install twotower[bench]); the
library never imports it.
"""

import argparse
import itertools
import json
import os
import statistics
import sys
import time

import numpy as np

import twotower  # noqa: F401  (Keras 2 before TensorFlow)

from twotower.data.text_corpus import load_corpus
from twotower.metrics.word_vectors import evaluate_word_vectors
from twotower.training.hogwild import load_kernels
from twotower.training.sgd_trainer import ENGINES
from twotower.training.word2vec_trainer import (DataConfig, ModelConfig, TrainConfig,
                                                set_threads, train_word2vec, word_vectors)
from twotower.reporting import format_table, write_metrics

# name -> (arch, head)
CONFIGS = {"sg_neg": ("sg", "neg"), "cbow_neg": ("cbow", "neg"), "sg_hs": ("sg", "hs")}


def run_gensim(sentences, arch, head, args, seed, epochs=None):
    from gensim.models import Word2Vec  # benchmark extra only

    epochs = epochs or args.epochs
    start, cpu = time.perf_counter(), time.process_time()
    model = Word2Vec(sentences, vector_size=args.dim, window=args.window,
                     min_count=args.min_count, sample=args.sample, sg=int(arch == "sg"),
                     hs=int(head == "hs"), negative=0 if head == "hs" else args.negative,
                     alpha=args.alpha, min_alpha=args.min_alpha, epochs=epochs,
                     workers=args.workers, seed=seed)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    tokens = sum(len(s) for s in sentences)
    out = {"words_per_sec": tokens * epochs / seconds, "seconds": seconds,
           "cpu_utilisation": cpu / seconds, "converged": 1.0}
    out.update(evaluate_word_vectors(model.wv.index_to_key, model.wv.vectors))
    return out


def run_ours(sentences, arch, head, args, seed, batch_size=None, epochs=None, engine=None):
    """Our run; a diverged one (FloatingPointError) is recorded as converged = 0 with NaN
    quality and speed, so that a sweep reports it instead of stopping."""
    data = DataConfig(corpus=args.corpus, min_count=args.min_count)
    model_config = ModelConfig(arch=arch, head=head, negative=args.negative, dim=args.dim,
                               window=args.window, sample=args.sample)
    train = TrainConfig(epochs=epochs or args.epochs, alpha=args.alpha,
                        min_alpha=args.min_alpha, batch_size=batch_size or args.batch_size,
                        seed=seed, threads=args.workers, row_step_cap=args.row_step_cap,
                        curvature_cap=args.curvature_cap,
                        negative_block=args.negative_block, engine=engine or args.engine)
    # Both sides' compiled code is loaded before the clock starts: gensim's Cython by its
    # import (run_gensim), our numba kernels here (from numba's cache; once per process).
    load_kernels()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        vocab, model, stats = train_word2vec(sentences, data, model_config, train,
                                             progress=not args.quiet)
    except FloatingPointError as e:
        print(f"ours {arch}/{head} batch {train.batch_size} seed {seed}: {e}", flush=True)
        nan = float("nan")
        return {"words_per_sec": nan, "seconds": nan, "cpu_utilisation": nan,
                "converged": 0.0, "ws353_spearman": nan, "simlex_spearman": nan,
                "analogy_accuracy": nan, "analogy_in_vocab": nan}
    cpu = time.process_time() - cpu
    vectors = word_vectors(model, arch)
    out = {"words_per_sec": stats["words_per_sec"], "seconds": stats["seconds"],
           "hogwild": stats["hogwild"],
           "cpu_utilisation": cpu / (time.perf_counter() - start),
           "converged": float(np.all(np.isfinite(vectors)))}
    out.update(evaluate_word_vectors(vocab.words, vectors))
    return out


def generator_rate(sentences, arch, args, seed):
    """Examples per second of the example stream alone (one epoch drawn, in the hogwild
    engine's text order): the input side must never be what limits training."""
    from twotower.data.vocab import Vocabulary
    from twotower.data.word2vec_examples import Word2VecExamples

    vocab = Vocabulary.build(sentences, min_count=args.min_count)
    ids, sentence_ids = vocab.encode(sentences)
    examples = Word2VecExamples(ids, sentence_ids, vocab.counts, arch=arch, window=args.window,
                                sample=args.sample, seed=seed, shuffle=False)
    start = time.perf_counter()
    _, item = examples.epoch(0)
    return len(item) / (time.perf_counter() - start), len(item)


SHORT = {"words_per_sec": "words_per_sec", "ws353_spearman": "ws353",
         "simlex_spearman": "simlex", "analogy_accuracy": "analogy", "seconds": "seconds",
         "cpu_utilisation": "cpu_utilisation"}


def build_parser():
    p = argparse.ArgumentParser(
        prog="word2vec_vs_gensim",
        description="twotower word2vec vs gensim Word2Vec on the same corpus, "
                    "hyperparameters and cores, medians over seeds.")
    p.add_argument("--out", required=True, help="output folder for metrics.json (checked "
                   "before any work, written atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier twotower output at --out")
    p.add_argument("--corpus", default="enwiki-sample",
                   help="'enwiki-sample', 'text8' or a text file (default %(default)s)")
    p.add_argument("--configs", default="sg_neg,cbow_neg,sg_hs",
                   help=f"comma-separated, of {tuple(CONFIGS)} (default %(default)s)")
    p.add_argument("--seeds", default="1,2", help="comma-separated seeds (default %(default)s)")
    p.add_argument("--epochs", type=int, default=5,
                   help="(default %(default)s, word2vec.c's and gensim's default)")
    p.add_argument("--dim", type=int, default=100, help="(default %(default)s)")
    p.add_argument("--window", type=int, default=5, help="(default %(default)s)")
    p.add_argument("--negative", type=int, default=5, help="(default %(default)s)")
    p.add_argument("--sample", type=float, default=1e-3, help="(default %(default)s)")
    p.add_argument("--min-count", type=int, default=5, help="(default %(default)s)")
    p.add_argument("--alpha", type=float, default=0.025, help="(default %(default)s)")
    p.add_argument("--min-alpha", type=float, default=1e-4, help="(default %(default)s)")
    p.add_argument("--engine", choices=ENGINES, default=TrainConfig.engine,
                   help="ours: the SGD engine of the main runs (training/sgd_trainer.py) "
                        "(default %(default)s)")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size,
                   help="ours: examples per sparse SGD step (default %(default)s)")
    p.add_argument("--row-step-cap", type=float, default=TrainConfig.row_step_cap,
                   help="ours: the per-row step bound c (default %(default)s)")
    p.add_argument("--curvature-cap", type=float, default=TrainConfig.curvature_cap,
                   help="ours: the per-row curvature bound tau (default %(default)s)")
    p.add_argument("--negative-block", type=int, default=TrainConfig.negative_block,
                   help="ours: examples sharing one draw of negatives (default %(default)s)")
    p.add_argument("--sweep-batch-sizes", default="256,1024,4096,16384",
                   help="also train ours at each of these comma-separated batch sizes for "
                        "--sweep-configs, every seed, beside gensim at the same epochs; "
                        "'' = no sweep (default %(default)s)")
    p.add_argument("--sweep-configs", default="sg_hs,sg_neg",
                   help="configs of the batch-size sweep (default %(default)s)")
    p.add_argument("--sweep-engines", default="hogwild,batched",
                   help="engines of the sweep, the first one's keys being {cfg}_ours_b* "
                        "(default %(default)s)")
    p.add_argument("--sweep-epochs", type=int, default=None,
                   help="epochs of each sweep run (default: --epochs; at 2 epochs WS353 "
                        "is too noisy for the band: 0.22-0.30 across seeds of one setting)")
    p.add_argument("--sweep-band", type=float, default=0.05,
                   help="a sweep run converged when it ends finite with WS353 no more than "
                        "this below gensim's median at the same epochs (default %(default)s)")
    p.add_argument("--workers", type=int, default=2,
                   help="gensim workers, our hogwild threads and TensorFlow threads "
                        "(default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None):
    from twotower.artifacts import atomic_directory, check_output_dir

    args = build_parser().parse_args(argv)
    check_output_dir(args.out, overwrite=args.overwrite)
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            raise SystemExit(f"--configs: unknown config {c!r}; choose from {tuple(CONFIGS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    set_threads(args.workers)
    sentences = load_corpus(args.corpus)
    metrics, rows = {}, []
    for name in configs:
        arch, head = CONFIGS[name]
        runs = {"ours": [], "gensim": []}
        for seed in seeds:
            runs["gensim"].append(run_gensim(sentences, arch, head, args, seed))
            runs["ours"].append(run_ours(sentences, arch, head, args, seed))
            print(f"{name} seed {seed}: gensim {runs['gensim'][-1]['words_per_sec']:.0f} w/s, "
                  f"ours {runs['ours'][-1]['words_per_sec']:.0f} w/s", flush=True)
        for who, results in runs.items():
            row = {"config": name, "who": who}
            for key, short in SHORT.items():
                value = statistics.median(r[key] for r in results)
                metrics[f"{name}_{who}_{short}"] = value
                if name == "sg_neg":
                    metrics[f"{who}_{short}"] = value
                row[short] = value
            row["analogy_in_vocab"] = results[0]["analogy_in_vocab"]
            rows.append(row)
        metrics[f"{name}_speed_ratio"] = (metrics[f"{name}_ours_words_per_sec"]
                                          / metrics[f"{name}_gensim_words_per_sec"])
        rate, per_epoch = generator_rate(sentences, arch, args, seeds[0])
        metrics[f"{name}_generator_examples_per_sec"] = rate
        metrics[f"{name}_ours_examples_per_sec"] = (
            per_epoch * args.epochs / metrics[f"{name}_ours_seconds"])
        print(f"partial metrics after {name}: " + json.dumps(metrics, default=float), flush=True)
    args.sweep_epochs = args.sweep_epochs or args.epochs
    sizes = [int(b) for b in args.sweep_batch_sizes.split(",") if b]
    sweep_configs = [c for c in args.sweep_configs.split(",") if c] if sizes else []
    sweep_engines = [e for e in args.sweep_engines.split(",") if e]
    sweep_rows, converged = [], {e: True for e in sweep_engines}
    for name in sweep_configs:
        arch, head = CONFIGS[name]
        ref = [run_gensim(sentences, arch, head, args, seed, epochs=args.sweep_epochs)
               for seed in seeds]
        ref_ws = statistics.median(r["ws353_spearman"] for r in ref)
        ref_wps = statistics.median(r["words_per_sec"] for r in ref)
        metrics[f"{name}_sweep_gensim_ws353"] = ref_ws
        sweep_rows.append({"config": name, "engine": "gensim", "batch_size": "-",
                           "words_per_sec": ref_wps, "ws353": ref_ws, "converged": 1,
                           "simlex": statistics.median(r["simlex_spearman"] for r in ref),
                           "analogy": statistics.median(r["analogy_accuracy"] for r in ref)})
        for engine, size in itertools.product(sweep_engines, sizes):
            results = []
            for seed in seeds:
                r = run_ours(sentences, arch, head, args, seed, batch_size=size,
                             epochs=args.sweep_epochs, engine=engine)
                r["converged"] = float(r["converged"] == 1.0
                                       and r["ws353_spearman"] >= ref_ws - args.sweep_band)
                results.append(r)
                print(f"{name} {engine} batch {size} seed {seed}: ours "
                      f"{r['words_per_sec']:.0f} w/s, WS353 {r['ws353_spearman']:.3f} (gensim "
                      f"{ref_ws:.3f}), converged {int(r['converged'])}", flush=True)
            row = {"config": name, "engine": engine, "batch_size": size,
                   "converged": int(all(r["converged"] == 1.0 for r in results))}
            converged[engine] &= bool(row["converged"])
            # The default engine's keys are {cfg}_ours_b{size}_*, the others' {cfg}_{engine}_b*.
            who = "ours" if engine == sweep_engines[0] else engine
            for key, short in SHORT.items():
                row[short] = statistics.median(r[key] for r in results)
                metrics[f"{name}_{who}_b{size}_{short}"] = row[short]
            metrics[f"{name}_{who}_b{size}_converged"] = row["converged"]
            row["speed_ratio"] = row["words_per_sec"] / ref_wps
            sweep_rows.append(row)
    if sweep_configs:
        # 1 only when every engine swept converged at every batch size, every seed.
        metrics["batch_sweep_converged"] = int(all(converged.values()))
        for engine, ok in converged.items():
            metrics[f"batch_sweep_converged_{engine}"] = int(ok)
        metrics.update(sweep_epochs=args.sweep_epochs, sweep_band=args.sweep_band,
                       sweep_batch_size_min=min(sizes), sweep_batch_size_max=max(sizes))
    if "sg_neg" in configs:
        metrics["speed_ratio"] = metrics["sg_neg_speed_ratio"]
    metrics.update(epochs=args.epochs, seeds=len(seeds), batch_size=args.batch_size,
                   tokens=sum(len(s) for s in sentences), negative_block=args.negative_block,
                   curvature_cap=args.curvature_cap, partial=0)
    with atomic_directory(args.out, overwrite=args.overwrite) as tmp:
        write_metrics(tmp, metrics)
    print(format_table(rows, columns=["config", "who", "words_per_sec", "seconds",
                                      "cpu_utilisation", "ws353", "simlex", "analogy",
                                      "analogy_in_vocab"]))
    if sweep_rows:
        print(format_table(sweep_rows, columns=["config", "engine", "batch_size", "converged",
                                                "words_per_sec", "ws353", "simlex",
                                                "analogy"]))
    print(f"medians over seeds {seeds}; wrote {os.path.join(args.out, 'metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
