"""word2vec as the degenerate two-tower model, as a library: settings, model, training.

Mikolov et al., "Efficient Estimation of Word Representations in Vector Space" and
"Distributed Representations of Words and Phrases and their Compositionality" (2013).
The query tower is the input embedding W (an IDTower over the centre for skip-gram, a
PooledIDTower taking the mean of the context for CBOW), the item tower the output
embedding W' (an IDTower), and the loss a twotower.losses.RetrievalLoss:

    neg              NEG: k negatives per example from unigram^0.75, no logQ
    nce              NCE: the same draws, logits s − log(k·q(c))
    sampled-softmax  softmax over {positive} ∪ k draws, with logQ correction
    hs               hierarchical softmax on a Huffman tree of the counts

Examples come from data/word2vec_examples.py and the optimiser is word2vec's sparse
per-example SGD (training/sgd_trainer.py). The word2vec, item2vec, Airbnb and EGES recipes
all train through :func:`train_word2vec`; the latter two through its hooks: a prebuilt
vocabulary, their own query tower / candidate source (:func:`build_model`), extra
(query, item) pairs per epoch (Airbnb's booked listing as global context) and the query
id passed to the loss (``query_is_item``: same-market negatives, own-id masking).
"""

import dataclasses
import json
import os
import time

import numpy as np
import tensorflow as tf

from twotower.data.samplers import UnigramSampler
from twotower.data.vocab import Vocabulary
from twotower.data.word2vec_examples import ARCHS, Word2VecExamples
from twotower.losses import HierarchicalSoftmax, RetrievalLoss, SampledNegatives
from twotower.towers.id_tower import IDTower
from twotower.towers.pooled_id_tower import PooledIDTower
from twotower.training.sgd_trainer import (CHECKPOINT_EVERY, CURVATURE_CAP, ENGINES,
                                         NEGATIVE_BLOCK, ROW_STEP_CAP, SparseSGDTrainer)
from twotower.towers.two_tower_model import TwoTowerModel

WORD2VEC_HEADS = ("neg", "hs", "nce", "sampled-softmax")


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
    """Optimiser and runtime: --epochs, --alpha, --min-alpha, --batch-size, --seed, --threads,
    --row-step-cap, --negative-block, --checkpoint-dir, --checkpoint-every, --curvature-cap,
    --engine."""

    epochs: int = 5
    alpha: float = 0.025
    min_alpha: float = 1e-4
    batch_size: int = 4096
    steps_per_call: int = 64
    seed: int = 1
    threads: int = 2
    row_step_cap: float = ROW_STEP_CAP
    negative_block: int = NEGATIVE_BLOCK
    checkpoint_dir: str = None
    checkpoint_every: int = CHECKPOINT_EVERY
    curvature_cap: float = CURVATURE_CAP
    engine: str = "auto"


def validate(data, model, train):
    """Clear ValueErrors naming the flag and the value, before any work."""
    if model.arch not in ARCHS:
        raise ValueError(f"--arch must be one of {ARCHS}, got {model.arch!r}")
    if model.head not in WORD2VEC_HEADS:
        raise ValueError(f"--head must be one of {WORD2VEC_HEADS}, got {model.head!r}")
    checks = [("--min-count", data.min_count, 1), ("--negative", model.negative, 1),
              ("--dim", model.dim, 1), ("--window", model.window, 1),
              ("--epochs", train.epochs, 1), ("--batch-size", train.batch_size, 1),
              ("--steps-per-call", train.steps_per_call, 1), ("--threads", train.threads, 1),
              ("--negative-block", train.negative_block, 1),
              ("--checkpoint-every", train.checkpoint_every, 1)]
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
    if train.engine not in ENGINES:
        raise ValueError(f"--engine must be one of {ENGINES}, got {train.engine!r}")
    if train.curvature_cap is not None and not train.curvature_cap > 0:
        raise ValueError(f"--curvature-cap must be > 0 (or inf), got {train.curvature_cap!r}")
    if not train.row_step_cap >= 1:
        raise ValueError(f"--row-step-cap must be >= 1 (or inf), got {train.row_step_cap!r}")
    if train.checkpoint_dir is not None and os.path.exists(train.checkpoint_dir) and (
            not os.path.isdir(train.checkpoint_dir)):
        raise ValueError(f"--checkpoint-dir must be a folder, got the file "
                         f"{train.checkpoint_dir!r}")
    if data.encoding_errors not in ("strict", "replace"):
        raise ValueError(f"--encoding-errors must be 'strict' or 'replace', got "
                         f"{data.encoding_errors!r}")


def build_model(vocab, model_config, seed, *, query_tower=None, candidates=None):
    """The two-tower model of word2vec, initialised as word2vec.c does (W uniform in
    ±0.5/d, W' and the HS node vectors zero).

    Args:
      vocab: the Vocabulary (its counts drive the unigram^0.75 negatives and HS tree).
      model_config: a ModelConfig.
      seed: initialisation / sampler seed.
      query_tower: replaces the input embedding W (e.g. EGES's SideInfoTower over item
        ids); it must take skip-gram's centre ids [B].
      candidates: replaces the unigram^0.75 SampledNegatives (e.g. Airbnb's corpus +
        same-market ConcatNegatives); not with the "hs" head.
    """
    V, d = len(vocab), model_config.dim
    if candidates is not None and model_config.head == "hs":
        raise ValueError("candidates cannot be set with head='hs' (HS has no negatives)")
    if query_tower is not None and model_config.arch != "sg":
        raise ValueError(f"a custom query_tower takes skip-gram centre ids: arch must be "
                         f"'sg', got {model_config.arch!r}")
    init = tf.keras.initializers.RandomUniform(-0.5 / d, 0.5 / d, seed=seed)
    if model_config.arch == "sg":
        if query_tower is None:
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
        loss = RetrievalLoss(HierarchicalSoftmax(vocab.counts, d, validate_ids=False),
                             candidates=None)
    else:
        if candidates is None:
            sampler = UnigramSampler(vocab.counts, 0.75, seed=seed)
            candidates = SampledNegatives(sampler, model_config.negative, shared=False)
        head = {"neg": "neg", "nce": "nce", "sampled-softmax": "softmax"}[model_config.head]
        # word2vec.c skips a negative equal to the positive: accidental hits are masked.
        loss = RetrievalLoss(head, candidates, logq=model_config.head != "neg",
                             remove_accidental_hits=True)
    model = TwoTowerModel(query_tower, item_tower, loss, name="word2vec")
    model({"query": query_probe, "item": tf.constant([0])})  # builds every weight
    if model_config.head == "hs":
        loss(query_tower(query_probe), None, tf.constant([0]))
    return model


def word_vectors(model, arch):
    """The input vectors W (one row per word, in vocabulary order). A query tower other
    than an ID lookup (EGES's SideInfoTower) is run over every id instead."""
    tower = model.query_tower
    if isinstance(tower, (IDTower, PooledIDTower)):
        w = tower.embeddings.numpy()
        return w if arch == "sg" else w[1:]
    n = int(model.item_tower.embeddings.shape[0])
    return np.concatenate([tower(tf.range(s, min(s + 4096, n))).numpy()
                           for s in range(0, n, 4096)])


#: Examples the hogwild engine hands to its threads per call, at least: each thread takes
#: a contiguous share, so the threads work ~2^20 examples apart in the text (word2vec.c's
#: threads work on far-apart parts of the file) and the model sees distant passages
#: interleaved. Measured (sg + HS, enwiki extract, 5 epochs, WS353 mean of 3 seeds): 16k
#: examples a call 0.396, 262k 0.416, 2.1M 0.473; one thread over 262k 0.398.
HOGWILD_ELEMENT_EXAMPLES = 2 ** 21


def hogwild_steps(train_config, engine):
    """Batches per element of the example stream: ``steps_per_call``, raised for the
    hogwild engine to cover HOGWILD_ELEMENT_EXAMPLES examples (the batch size then only
    sets the granularity of progress and checkpoints)."""
    steps = train_config.steps_per_call
    if engine == "hogwild":
        steps = max(steps, -(-HOGWILD_ELEMENT_EXAMPLES // train_config.batch_size))
    return steps


def set_threads(threads):
    """Uses ``threads`` cores for TensorFlow (ignored once TF's runtime has started)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass


def train_word2vec(sentences, data_config, model_config, train_config, *, progress=True,
                   vocab=None, model_fn=None, extra_pairs=None, query_is_item=False,
                   description=None):
    """Vocabulary, model and training on tokenised ``sentences``.

    Args:
      sentences: lists of tokens (words, or item ids).
      data_config, model_config, train_config: the settings above.
      progress: show a tqdm bar.
      vocab: a prebuilt Vocabulary (default: built from ``sentences`` with min_count /
        max_vocab_size), e.g. one that holds items never seen in ``sentences``.
      model_fn: ``model_fn(vocab) -> TwoTowerModel`` replacing :func:`build_model`.
      extra_pairs: passed to Word2VecExamples: ``extra_pairs(epoch, rng, ids,
        sentence_ids) -> (query, item)`` adds pairs to every epoch (skip-gram only).
      query_is_item: the query is an item of the vocabulary; its id reaches the loss
        (SparseSGDTrainer(query_is_item=True)).

    Returns (vocab, model, stats) with stats: tokens (raw corpus words), vocab_size,
    examples, seconds (vocabulary + training wall time), words_per_sec (tokens × epochs /
    seconds), mean_loss, steps, resumed_from_element, hogwild (1 when the hogwild engine
    trained, 0 for the batched one).
    """
    validate(data_config, model_config, train_config)
    if not sentences:
        raise ValueError(f"corpus {data_config.corpus!r} is empty: no sentences")
    start = time.perf_counter()
    tokens = sum(len(s) for s in sentences)
    if vocab is None:
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
    model = (model_fn or (lambda v: build_model(v, model_config, train_config.seed)))(vocab)
    trainer = SparseSGDTrainer(model, alpha=train_config.alpha, min_alpha=train_config.min_alpha,
                               query_is_item=query_is_item,
                               row_step_cap=train_config.row_step_cap,
                               negative_block=train_config.negative_block,
                               seed=train_config.seed,
                               checkpoint_dir=train_config.checkpoint_dir,
                               checkpoint_every=train_config.checkpoint_every,
                               curvature_cap=train_config.curvature_cap,
                               engine=train_config.engine, threads=train_config.threads)
    # The batched engine sums a batch's updates: it needs shuffled examples; hogwild
    # applies them one by one, in word2vec.c's text order (its rows stay in cache).
    examples = Word2VecExamples(ids, sentence_ids, vocab.counts, arch=model_config.arch,
                                window=model_config.window, sample=model_config.sample,
                                seed=train_config.seed, extra_pairs=extra_pairs,
                                shuffle=trainer.engine == "batched")
    # The hogwild engine is numpy through and through: it takes the numpy stream.
    stream = examples.dataset if trainer.engine == "batched" else examples.batches
    dataset = stream(train_config.epochs, train_config.batch_size,
                     steps_per_element=hogwild_steps(train_config, trainer.engine))
    run = {"data": dataclasses.asdict(data_config), "model": dataclasses.asdict(model_config),
           "train": {k: v for k, v in dataclasses.asdict(train_config).items()
                     if k not in ("checkpoint_dir", "checkpoint_every", "threads")},
           "vocab_size": len(vocab), "tokens": int(len(ids))}
    result = trainer.fit(dataset, progress=progress, run_settings=run,
                         batch_shape=(train_config.steps_per_call, train_config.batch_size),
                         description=description or
                         f"word2vec {model_config.arch}/{model_config.head}")
    seconds = time.perf_counter() - start
    stats = {"tokens": tokens, "vocab_size": len(vocab), "examples": result["examples"],
             "seconds": seconds, "words_per_sec": tokens * train_config.epochs / seconds,
             "mean_loss": result["mean_loss"], "steps": result["steps"],
             "resumed_from_element": result["resumed_from"],
             "hogwild": int(trainer.engine == "hogwild")}
    return vocab, model, stats


def unit_rows(x):
    """Rows scaled to unit L2 norm (zero rows stay zero): cosine = dot of these."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(words, vectors, probes, k=8):
    """{probe: [(word, cosine), ...]} for the probes in the vocabulary (others left out)."""
    index = {w: i for i, w in enumerate(words)}
    unit = unit_rows(vectors)
    out = {}
    for probe in probes:
        if probe not in index:
            continue
        sims = unit @ unit[index[probe]]
        sims[index[probe]] = -np.inf
        top = np.argsort(-sims)[:k]
        out[probe] = [(words[i], float(sims[i])) for i in top]
    return out


def save_model(folder, model, model_config):
    """The model's weights (weights.h5) and its ModelConfig (config.json) in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    model.save_weights(os.path.join(folder, "weights.h5"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(model_config), f, indent=2)


def load_model(folder, *, vocab=None, seed=1):
    """Rebuilds a model saved by :func:`save_model` (config.json + weights.h5) to use or to
    train further, as gensim's ``Word2Vec.load`` then ``train``.

    The vocabulary comes from ``vocab`` (a Vocabulary), else ``folder/vocab.json``
    ({"words": [...], "counts": [...]}, which the recipes write beside the weights), else
    ``vocab.tsv`` (word<TAB>count) in the folder above (the word2vec recipe's --out). A
    custom query tower (EGES's SideInfoTower) is rebuilt from ``folder/query_tower.json``
    ({"class_name", "config"}, its Keras get_config()). The model is built exactly as
    :func:`build_model` builds it (the standard unigram^0.75 negatives: a recipe's own
    candidate source, e.g. Airbnb's same-market negatives, holds no weights and is not
    restored), then the weights are loaded.

    To continue training on new text, pass the result to :func:`train_word2vec` with
    ``vocab=vocab, model_fn=lambda v: model``: the vocabulary stays fixed (words not in it
    are dropped, as gensim does without ``build_vocab(update=True)``); to grow it with the
    new text's words, as ``build_vocab(update=True)``, first ``vocab =
    vocab.grown(sentences, min_count=...)`` and ``model = grow_model(model, vocab, config,
    seed)``. The learning rate decays from ``alpha`` to ``min_alpha`` again over the new
    run.

    Returns:
      (model, vocab, model_config): the TwoTowerModel, the Vocabulary, the ModelConfig.
    """
    from twotower.towers.side_info_tower import SideInfoTower

    config_path = os.path.join(folder, "config.json")
    weights_path = os.path.join(folder, "weights.h5")
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise ValueError(f"{folder!r} is not a word2vec model folder: no "
                             f"{os.path.basename(path)} (save_model writes config.json and "
                             f"weights.h5)")
    try:
        with open(config_path, encoding="utf-8") as f:
            model_config = ModelConfig(**json.load(f))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise ValueError(f"{config_path!r} is not a ModelConfig: {e}") from None
    if vocab is None:
        vocab_json = os.path.join(folder, "vocab.json")
        vocab_tsv = os.path.join(os.path.dirname(os.path.abspath(folder)), "vocab.tsv")
        if os.path.isfile(vocab_json):
            with open(vocab_json, encoding="utf-8") as f:
                saved = json.load(f)
            vocab = Vocabulary(saved["words"], saved["counts"])
        elif os.path.isfile(vocab_tsv):
            words, counts = [], []
            with open(vocab_tsv, encoding="utf-8") as f:
                for line in f:
                    word, count = line.rstrip("\n").rsplit("\t", 1)
                    words.append(word)
                    counts.append(int(count))
            vocab = Vocabulary(words, counts)
        else:
            raise ValueError(f"no vocabulary for the model in {folder!r}: neither "
                             f"{vocab_json!r} nor {vocab_tsv!r} exists; pass vocab=")
    query_tower = None
    tower_path = os.path.join(folder, "query_tower.json")
    if os.path.isfile(tower_path):
        with open(tower_path, encoding="utf-8") as f:
            spec = json.load(f)
        classes = {"SideInfoTower": SideInfoTower}
        if spec.get("class_name") not in classes:
            raise ValueError(f"{tower_path!r}: query tower class {spec.get('class_name')!r} "
                             f"is not one of {sorted(classes)}")
        query_tower = classes[spec["class_name"]].from_config(spec["config"])
    model = build_model(vocab, model_config, seed, query_tower=query_tower)
    model.load_weights(weights_path)
    return model, vocab, model_config


def grow_model(model, vocab, model_config, seed):
    """``model`` (trained on a vocabulary that ``vocab`` extends: :meth:`Vocabulary.grown`)
    rebuilt for ``vocab``, as gensim's ``build_vocab(update=True)`` does: every weight
    table's rows of the old words are copied (W, W', and with the "hs" head the node
    vectors by index, as gensim keeps syn1's rows while it rebuilds the Huffman tree from
    the new counts); the new words' rows are initialised as :func:`build_model`
    initialises any row (W uniform in ±0.5/d, W' zero). The negatives' unigram table is
    built from the new counts. Returns the new model (the input is left unchanged)."""
    grown = build_model(vocab, model_config, seed)
    old, new = model.weights, grown.weights
    if len(old) != len(new):
        raise ValueError(f"cannot grow the model: it has {len(old)} weights, a {model_config.arch}/"
                         f"{model_config.head} model of this vocabulary has {len(new)}")
    for a, b in zip(old, new):
        va, vb = a.numpy(), b.numpy()
        if va.shape == vb.shape:
            b.assign(va)
        elif va.ndim == vb.ndim and va.shape[1:] == vb.shape[1:] and len(va) <= len(vb):
            vb[:len(va)] = va
            b.assign(vb)
        else:
            raise ValueError(f"cannot grow the model: weight {a.name} is {list(va.shape)}, "
                             f"{list(vb.shape)} for the grown vocabulary")
    return grown


__all__ = ["WORD2VEC_HEADS", "DataConfig", "ModelConfig", "TrainConfig", "validate", "build_model",
           "word_vectors", "set_threads", "train_word2vec", "unit_rows",
           "nearest_neighbours", "save_model", "grow_model"]
