"""FeatureTower: a tower over named features (ids, categories, text, multi-hot, dense,
item sequences), concatenated and passed through an MLP, optionally L2-normalised.

    e = [emb_1(x_1); …; emb_F(x_F)]           one embedding per feature
    u = normalize?( W_L σ(… σ(W_1 e + b_1) …) + b_L )

This is the tower of DSSM (Huang et al., "Learning Deep Structured Semantic Models for Web
Search using Clickthrough Data", CIKM 2013), of the YouTube candidate generator
(Covington et al., RecSys 2016; Yi et al., RecSys 2019: ids, watch history and user
features concatenated, then ReLU layers) and of EBR (Huang et al., KDD 2020).

Each feature is a small plain dict (a "spec") made by the builders below, so the tower's
``get_config`` carries its vocabularies and round-trips exactly:

* ``categorical`` — StringLookup / IntegerLookup with OOV buckets, then an embedding. An
  unseen value (a cold-start user or item id) maps to an OOV bucket instead of failing;
  ``oov_rate`` replaces known ids by the OOV bucket during training so that bucket learns
  a "generic" embedding and cold-start queries get one shaped by their other features.
* ``hashed`` — the Hashing layer then an embedding, for high-cardinality values.
* ``text`` — TextVectorization (lower-case, strip punctuation, split on whitespace) then
  mean-pooled token embeddings (padding and out-of-vocabulary tokens ignored).
* ``multi_hot`` — a padded list of tokens ("" pads) through StringLookup(multi_hot), then
  the mean of the present tokens' embeddings.
* ``dense`` — the Normalization layer with a mean and variance fixed from data.
* ``sequence`` — item ids (0 = padding) pooled by PooledIDTower (mean or sum), or by
  AttentionPooledIDTower (the most recent item attending over the others, with learned
  positions): a user's history.

``FeatureTower.preprocess`` applies every string op once, outside the training step
(strings -> ids, as TFX Transform does ahead of training); the tower called on its output
gives the same embedding with numeric ops only.

The builders are also ``FeatureTower``'s static methods (``FeatureTower.categorical``, …),
so ``from twotower import FeatureTower`` is all a user needs; the FeatureTower docstring
shows a tower on a user's own columns.
"""

import numpy as np
import tensorflow as tf

from twotower.towers.pooled_id_tower import POOLINGS

KINDS = ("categorical", "hashed", "text", "multi_hot", "dense", "sequence")
PREPROCESSED_SUFFIX = "__pre"


def preprocessed_key(name):
    """The key of feature ``name``'s numeric input in ``FeatureTower.preprocess``'s dict."""
    return f"{name}{PREPROCESSED_SUFFIX}"


class _VocabularyArray(np.ndarray):
    """A lookup layer's vocabulary as a NumPy array whose truth value is "not empty", as a
    list's is: Keras' lookup layers test ``if self.input_vocabulary:`` when saving, which
    a plain array of more than one value refuses."""

    def __bool__(self):
        return self.size > 0


def _lookup(cls, f, **kwargs):
    """A lookup layer over a spec's vocabulary, given as an array. The layer keeps what it
    is given; a Python list would be wrapped by Keras' attribute tracking and walked,
    element by element, at every call of the tower, an array is not. The kept copy is a
    :class:`_VocabularyArray`, so that saving works."""
    values = (np.asarray(f["vocabulary"], np.int64) if f.get("dtype") == "int64"
              else np.asarray([str(v) for v in f["vocabulary"]], dtype=str))
    layer = cls(vocabulary=values, **kwargs)
    # TextVectorization keeps its vocabulary in an inner StringLookup
    for holder in (layer, getattr(layer, "_lookup_layer", None)):
        if isinstance(getattr(holder, "input_vocabulary", None), np.ndarray):
            holder.input_vocabulary = holder.input_vocabulary.view(_VocabularyArray)
    return layer


def _as_list(values):
    return [v.item() if hasattr(v, "item") else v for v in values]


def _check_name(name):
    if not isinstance(name, str) or not name:
        raise ValueError(f"feature name must be a non-empty string, got {name!r}")


def categorical(name, values=None, *, vocabulary=None, dim=16, num_oov=1, min_count=1,
                oov_rate=0.0):
    """A categorical feature (ids, gender, occupation…): lookup with OOV buckets + embedding.

    Args:
      name: the input key.
      values: training values to build the vocabulary from (values seen >= min_count times,
        most frequent first), or None when ``vocabulary`` is given.
      vocabulary: the known values (ints or strings).
      dim: embedding size.
      num_oov: OOV buckets (unseen values are hashed into them).
      oov_rate: probability, in training, of replacing a known value by the OOV bucket.
    """
    _check_name(name)
    if vocabulary is None:
        if values is None:
            raise ValueError(f"categorical feature {name!r} needs values or vocabulary")
        uniq, counts = np.unique(np.asarray(values).reshape(-1), return_counts=True)
        order = np.lexsort((uniq, -counts))
        vocabulary = [u for u, c in zip(uniq[order], counts[order]) if c >= min_count]
    vocabulary = _as_list(vocabulary)
    if not vocabulary:
        raise ValueError(f"categorical feature {name!r} has an empty vocabulary")
    is_int = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vocabulary)
    if num_oov < 1:
        raise ValueError(f"num_oov must be >= 1 (unseen values need a bucket), got {num_oov!r}")
    if not 0.0 <= oov_rate < 1.0:
        raise ValueError(f"oov_rate must be in [0, 1), got {oov_rate!r}")
    return {"name": name, "kind": "categorical", "vocabulary": vocabulary,
            "dtype": "int64" if is_int else "string", "dim": int(dim),
            "num_oov": int(num_oov), "oov_rate": float(oov_rate)}


def hashed(name, num_bins, *, dim=16):
    """A high-cardinality feature hashed into ``num_bins`` buckets, then embedded."""
    _check_name(name)
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins!r}")
    return {"name": name, "kind": "hashed", "num_bins": int(num_bins), "dim": int(dim)}


def text(name, values=None, *, vocabulary=None, dim=16, max_tokens=5000, sequence_length=16):
    """A free-text feature (titles): tokens -> embeddings -> mean over present tokens."""
    _check_name(name)
    if vocabulary is None:
        if values is None:
            raise ValueError(f"text feature {name!r} needs values or vocabulary")
        tv = tf.keras.layers.TextVectorization(max_tokens=max_tokens)
        tv.adapt(tf.constant([str(v) for v in np.asarray(values).reshape(-1)]))
        vocabulary = [str(t) for t in tv.get_vocabulary()[2:]]  # drop "" and [UNK]
    if not vocabulary:
        raise ValueError(f"text feature {name!r} has an empty vocabulary")
    return {"name": name, "kind": "text", "vocabulary": [str(t) for t in vocabulary],
            "dim": int(dim), "sequence_length": int(sequence_length)}


def multi_hot(name, values=None, *, vocabulary=None, dim=16):
    """A set of tokens (genres), given as [n, k] strings padded with "": mean embedding."""
    _check_name(name)
    if vocabulary is None:
        if values is None:
            raise ValueError(f"multi_hot feature {name!r} needs values or vocabulary")
        vocabulary = sorted({str(v) for v in np.asarray(values).reshape(-1) if str(v)})
    if not vocabulary:
        raise ValueError(f"multi_hot feature {name!r} has an empty vocabulary")
    return {"name": name, "kind": "multi_hot", "vocabulary": [str(t) for t in vocabulary],
            "dim": int(dim)}


def dense(name, values=None, *, mean=None, variance=None):
    """A numeric feature (year, age), standardised with a fixed mean and variance."""
    _check_name(name)
    if mean is None or variance is None:
        if values is None:
            raise ValueError(f"dense feature {name!r} needs values or mean and variance")
        v = np.asarray(values, np.float64)
        v = v.reshape(len(v), -1)
        mean, variance = v.mean(axis=0).tolist(), np.maximum(v.var(axis=0), 1e-12).tolist()
    mean, variance = np.ravel(mean).tolist(), np.ravel(variance).tolist()
    return {"name": name, "kind": "dense", "mean": mean, "variance": variance}


SEQUENCE_POOLINGS = POOLINGS + ("attention",)  # PooledIDTower's, then AttentionPooledIDTower


def sequence(name, vocab_size, *, dim=16, pooling="mean", validate_ids=True, max_length=None,
             num_heads=2):
    """A sequence of item ids (0 pads; e.g. the watch history, column 0 the most recent).

    pooling "mean" / "sum": PooledIDTower (order-blind); "attention":
    AttentionPooledIDTower (the most recent item attends over the sequence with learned
    positions; needs ``max_length``, the longest sequence, and takes ``num_heads``).
    validate_ids=False drops the range assertion from the hot path, for ids built by this
    toolkit's own data code (always in range).
    """
    _check_name(name)
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2 (0 is padding), got {vocab_size!r}")
    if pooling not in SEQUENCE_POOLINGS:
        raise ValueError(f"sequence feature {name!r}: pooling must be one of "
                         f"{SEQUENCE_POOLINGS}, got {pooling!r}")
    spec = {"name": name, "kind": "sequence", "vocab_size": int(vocab_size), "dim": int(dim),
            "pooling": pooling, "validate_ids": bool(validate_ids)}
    if pooling == "attention":
        if max_length is None or isinstance(max_length, bool) or int(max_length) < 1:
            raise ValueError(f"sequence feature {name!r}: pooling='attention' needs "
                             f"max_length >= 1 (positions are learned), got {max_length!r}")
        spec.update(max_length=int(max_length), num_heads=int(num_heads))
    return spec


@tf.keras.utils.register_keras_serializable(package="twotower")
class FeatureTower(tf.keras.layers.Layer):
    """Embeds a dict of named features, concatenates, applies an MLP (see module doc):
    the DSSM / YouTube / EBR tower.

    On your own columns (any dict of equal-length arrays: a CSV read with pandas or
    pyarrow, then ``.to_numpy()`` per column). String ids become row numbers first — the
    row number is the item id the losses and the index use:

        import numpy as np
        from twotower import FeatureTower

        # items_csv: your table, e.g. {c: df[c].to_numpy() for c in df} from pandas
        vocab, item_id = np.unique(items_csv["item_id"], return_inverse=True)  # vocab[3]: id 3
        item_features = {
            "item_id": item_id,                                  # int64 [N], row = item
            "category": items_csv["category"],                   # strings
            "title": items_csv["title"],                         # free text
            "price": items_csv["price"].astype("float32"),       # numbers
        }
        item_tower = FeatureTower([
            FeatureTower.categorical("item_id", item_features["item_id"], dim=32),
            FeatureTower.categorical("category", item_features["category"], dim=8),
            FeatureTower.text("title", item_features["title"], dim=16),
            FeatureTower.dense("price", item_features["price"]),
        ], output_dim=32, hidden_units=(64,))
        item_tower(item_features)                                 # float32 [N, 32]

    A user tower is built the same way (``FeatureTower.categorical("user_id", …)``,
    ``FeatureTower.multi_hot("genres", padded_lists)``, ``FeatureTower.sequence("history",
    num_items + 1)`` for the ids of past items, 0 = padding; ``FeatureTower.hashed`` for
    very many distinct values). Pass the item dict as ``TwoTowerModel(...,
    item_features=item_features)`` so that sampled negatives are embedded from features.
    Values never seen when the tower was made (a new user or item) fall in an OOV bucket.

    Args:
      features: list of feature specs (from ``categorical``, ``hashed``, ``text``,
        ``multi_hot``, ``dense``, ``sequence``).
      output_dim: size of the output embedding.
      hidden_units: widths of the hidden ReLU layers before the output layer.
      activation: activation of the hidden layers.
      l2_normalize: L2-normalise the output (cosine towers).
      dropout: dropout rate after each hidden layer.

    Call with a dict {feature name: tensor [B] or [B, k]}; extra keys are ignored.
    Returns [B, output_dim]. For fast training, preprocess once and call on the result:
    ``table = item_tower.preprocess(item_features, keep=("item_id",))`` turns every
    string into ids (lookups, tokens, hashing); ``item_tower(table)`` (or a batch of its
    rows) then does only numeric work, so the training step compiles with XLA
    (``compile(jit_compile=True)``), while the same tower keeps taking raw features for
    evaluation, export and serving. ``get_config`` carries the vocabularies; the input dtypes
    seen on the first call are the build config, so the Keras v3 ``.keras`` format and
    SavedModel both reload it.
    """

    categorical = staticmethod(categorical)
    hashed = staticmethod(hashed)
    text = staticmethod(text)
    multi_hot = staticmethod(multi_hot)
    dense = staticmethod(dense)
    sequence = staticmethod(sequence)

    def __init__(self, features, output_dim=32, hidden_units=(64,), activation="relu",
                 l2_normalize=False, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if not features:
            raise ValueError("features must list at least one feature spec, got []")
        names = [f.get("name") for f in features]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names must be unique, got {names!r}")
        for f in features:
            if f.get("kind") not in KINDS:
                raise ValueError(f"feature {f.get('name')!r}: kind must be one of {KINDS}, "
                                 f"got {f.get('kind')!r}")
        if output_dim < 1:
            raise ValueError(f"output_dim must be >= 1, got {output_dim!r}")
        # not Keras-tracked: plain specs, some with a vocabulary of millions of values,
        # which Keras would wrap and walk, element by element, at every call of the layer
        self.__dict__["features"] = [dict(f) for f in features]
        self.output_dim = int(output_dim)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.l2_normalize = bool(l2_normalize)
        self.dropout = float(dropout)
        self._pre, self._emb = {}, {}
        for f in self.features:
            self._make_feature_layers(f)
        self._hidden = [tf.keras.layers.Dense(u, activation=activation, name=f"hidden_{i}")
                        for i, u in enumerate(self.hidden_units)]
        self._drop = [tf.keras.layers.Dropout(self.dropout) for _ in self.hidden_units]
        self._out = tf.keras.layers.Dense(self.output_dim, name="output")
        # not Keras-tracked: the dtypes/shapes of the first call, for get_build_config
        self.__dict__["_input_signature"] = None
        self.__dict__["_signature_is_raw"] = False

    # Sublayers are made here (Keras tracks them); their weights are created in their own
    # build on the first call, which Keras triggers through ours.
    def _make_feature_layers(self, f):
        name, kind = f["name"], f["kind"]
        if kind == "categorical":
            cls = (tf.keras.layers.IntegerLookup if f["dtype"] == "int64"
                   else tf.keras.layers.StringLookup)
            lookup = _lookup(cls, f, num_oov_indices=f["num_oov"], name=f"{name}_lookup")
            self._pre[name] = lookup
            self._emb[name] = tf.keras.layers.Embedding(
                len(f["vocabulary"]) + f["num_oov"], f["dim"], name=f"{name}_embedding")
        elif kind == "hashed":
            self._pre[name] = tf.keras.layers.Hashing(f["num_bins"], name=f"{name}_hashing")
            self._emb[name] = tf.keras.layers.Embedding(f["num_bins"], f["dim"],
                                                        name=f"{name}_embedding")
        elif kind == "text":
            self._pre[name] = _lookup(tf.keras.layers.TextVectorization, f,
                                      output_sequence_length=f["sequence_length"],
                                      name=f"{name}_vectorize")
            # index 0 = padding, 1 = [UNK]; both get zero weight in the mean below
            self._emb[name] = tf.keras.layers.Embedding(len(f["vocabulary"]) + 2, f["dim"],
                                                        name=f"{name}_embedding")
        elif kind == "multi_hot":
            self._pre[name] = _lookup(tf.keras.layers.StringLookup, f, mask_token="",
                                      output_mode="multi_hot", name=f"{name}_lookup")
            # column 0 of the multi-hot is OOV; its row is learned like any token
            self._emb[name] = tf.keras.layers.Dense(f["dim"], use_bias=False,
                                                    name=f"{name}_embedding")
        elif kind == "dense":
            self._pre[name] = tf.keras.layers.Normalization(
                mean=f["mean"], variance=f["variance"], name=f"{name}_normalize")
        elif kind == "sequence" and f["pooling"] == "attention":
            from twotower.towers.attention_id_tower import AttentionPooledIDTower

            self._emb[name] = AttentionPooledIDTower(
                f["vocab_size"], f["dim"], f["max_length"], num_heads=f["num_heads"],
                validate_ids=f.get("validate_ids", True), name=f"{name}_attention")
        elif kind == "sequence":
            from twotower.towers.pooled_id_tower import PooledIDTower

            self._emb[name] = PooledIDTower(f["vocab_size"], f["dim"], pooling=f["pooling"],
                                            validate_ids=f.get("validate_ids", True),
                                            name=f"{name}_pooled")

    # -- preprocessing: strings -> ids, once, outside the training step -----------------
    def preprocess(self, inputs, *, keep=()):
        """The numeric inputs of this tower: every string / lookup / hashing op applied.

        Returns {``preprocessed_key(name)``: tensor} for every feature — categorical
        and hashed: int64 lookup indexes [B] (unseen values already in their OOV
        bucket); text: int64 token ids [B, sequence_length] (0 pads, 1 = unknown);
        multi_hot: float32 token counts [B, V + 1]; dense: float32 [B, k] (standardised
        in the tower); sequence: the item ids [B, L] — plus the raw inputs named in
        ``keep`` unchanged (e.g. the item id a retrieval loss needs).

        The tower called on this dict does only numeric work (gathers, pooling, the MLP),
        so a training step over it compiles with XLA; called on the raw features it
        gives the same output (``tower(x) == tower(tower.preprocess(x))``, the oov_rate
        drops of training included, which act on the indexes). Preprocess an item table
        once and gather its rows per batch, as TFX's Transform does for a whole
        dataset; the saved and served towers keep taking raw features.
        """
        missing = [f["name"] for f in self.features if f["name"] not in inputs]
        missing += [k for k in keep if k not in inputs and k not in missing]
        if missing:
            raise ValueError(f"FeatureTower {self.name!r}.preprocess is missing inputs "
                             f"{missing}; got keys {sorted(inputs)}")
        out = {preprocessed_key(f["name"]): self._preprocess_one(f, inputs[f["name"]])
               for f in self.features}
        out.update({k: inputs[k] for k in keep})
        return out

    def is_preprocessed(self, inputs):
        """Whether ``inputs`` holds every feature's preprocessed entry (see preprocess)."""
        return isinstance(inputs, dict) and all(
            preprocessed_key(f["name"]) in inputs for f in self.features)

    def _preprocess_one(self, f, x):
        name, kind = f["name"], f["kind"]
        if kind == "sequence":
            return x.to_tensor(0) if isinstance(x, tf.RaggedTensor) else tf.convert_to_tensor(x)
        x = tf.convert_to_tensor(x)
        if kind in ("categorical", "hashed", "text") and x.shape.rank == 2 and x.shape[-1] == 1:
            x = tf.squeeze(x, -1)
        if kind == "categorical":
            if f["dtype"] == "int64":
                x = tf.cast(x, tf.int64)
            return tf.cast(self._pre[name](x), tf.int64)
        if kind in ("hashed", "text"):
            return tf.cast(self._pre[name](x), tf.int64)
        if kind == "multi_hot":
            if x.shape.rank == 1:
                x = x[:, None]
            return tf.cast(self._pre[name](x), tf.float32)  # [B, V+1], column 0 = OOV
        x = tf.cast(x, tf.float32)  # dense
        return x[:, None] if x.shape.rank == 1 else x

    def _embed(self, f, x, training):
        """One feature's embedding from its raw input."""
        return self._embed_numeric(f, self._preprocess_one(f, x), training)

    def _embed_numeric(self, f, x, training):
        """One feature's embedding from its preprocessed tensor (numeric ops only)."""
        name, kind = f["name"], f["kind"]
        if kind == "categorical":
            if training and f["oov_rate"] > 0:
                drop = tf.random.uniform(tf.shape(x)) < f["oov_rate"]
                x = tf.where(drop, tf.zeros_like(x), x)  # index 0 = first OOV bucket
            return self._emb[name](x)
        if kind == "hashed":
            return self._emb[name](x)
        if kind == "text":
            vecs = self._emb[name](x)  # [B, L, d]
            present = tf.cast(x > 1, vecs.dtype)[..., None]
            return tf.reduce_sum(vecs * present, 1) / tf.maximum(tf.reduce_sum(present, 1), 1.0)
        if kind == "multi_hot":
            return self._emb[name](x) / tf.maximum(tf.reduce_sum(x, -1, keepdims=True), 1.0)
        if kind == "dense":
            return self._pre[name](x)
        if f["pooling"] == "attention":
            return self._emb[name](x, training=training)
        return self._emb[name](x)  # sequence, pooled

    def call(self, inputs, training=None):
        if not isinstance(inputs, dict):
            raise ValueError(f"FeatureTower {self.name!r} takes a dict of features, got "
                             f"{type(inputs).__name__}")
        if not self.is_preprocessed(inputs):
            keys = {f["name"]: preprocessed_key(f["name"]) for f in self.features}
            if any(k in inputs for k in keys.values()):
                missing = [n for n, k in keys.items() if k not in inputs]
                raise ValueError(f"FeatureTower {self.name!r} got preprocessed inputs but is "
                                 f"missing inputs {missing} (keys "
                                 f"{[keys[n] for n in missing]}); got keys {sorted(inputs)}")
            numeric = self.preprocess(inputs)  # raises naming missing raw inputs
            self._record_signature(inputs, raw=True)
        else:
            numeric = inputs
            self._record_signature(inputs, raw=False)
        parts = [tf.cast(self._embed_numeric(f, numeric[preprocessed_key(f["name"])], training),
                         tf.float32) for f in self.features]
        x = tf.concat(parts, axis=-1)
        for hidden, drop in zip(self._hidden, self._drop):
            x = drop(hidden(x), training=training)
        x = self._out(x)
        if self.l2_normalize:
            x = tf.math.l2_normalize(x, axis=-1)
        return x

    def _record_signature(self, inputs, *, raw):
        """Keeps the dtypes/shapes of the raw inputs (else, until raw ones are seen, of
        the preprocessed ones) for get_build_config: either builds every weight."""
        if self._input_signature is not None and (self._signature_is_raw or not raw):
            return
        from twotower.towers.two_tower_model import input_signature

        keys = ([f["name"] for f in self.features] if raw
                else [preprocessed_key(f["name"]) for f in self.features])
        self.__dict__["_input_signature"] = input_signature({k: inputs[k] for k in keys})
        self.__dict__["_signature_is_raw"] = raw

    def get_build_config(self):
        """The input dtypes and shapes of the first call (JSON)."""
        if self._input_signature is not None:
            return {"input_signature": self._input_signature}
        return super().get_build_config()

    def build_from_config(self, config):
        """Builds every sublayer by calling the tower on a small batch of the recorded
        dtypes (Keras's default would build from shapes alone, with float inputs)."""
        if "input_signature" not in config:
            return super().build_from_config(config)
        from twotower.towers.two_tower_model import inputs_from_signature

        self(inputs_from_signature(config["input_signature"]), training=False)

    def get_config(self):
        config = super().get_config()
        config.update({
            "features": [dict(f) for f in self.features],
            "output_dim": self.output_dim,
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "l2_normalize": self.l2_normalize,
            "dropout": self.dropout,
        })
        return config
