"""TwoTowerModel: a query tower, an item tower and a RetrievalLoss, trained with fit.

score(q, c) = <f(q), g(c)>, the dot product of the two towers. Each train_step:
  1. u = query_tower(query), v⁺ = item_tower(item), ids⁺ = the item ids;
  2. extra ids = loss.draw(ids⁺) — sampled/index negatives, or every item — embedded with
     the same item tower (through ``item_features`` when the item tower takes features);
  3. ℓ = mean over the batch of loss(u, v⁺, ids⁺, extra, extra ids, query ids).

A batch is a dict {"query": ..., "item": ...} (optionally "query_id" for item-to-item
training, which masks the query's own id among the candidates) or a tuple (query, item).
The item input is an int id tensor [B], or a dict of features holding ``item_id_key``.
This is the role tfrs.Model + tfrs.tasks.Retrieval play in TFRS; twotower keeps the
towers and the loss as separate, serializable parts so that any head × candidate source
runs in the same step.

Metrics: ``compile(metrics=[TopKRecall(ks=(10, 50))])`` makes ``evaluate`` (and the
validation pass of ``fit``) report whole-catalogue recall@K beside the loss
(metrics/top_k_recall.py); a batch may carry ``"exclude"`` (seen item ids [B, m], -1 pads).

Saving: both Keras formats round-trip to a TwoTowerModel with the same towers, loss,
item_features table and weights — ``model.save("m.keras")`` (the Keras v3 zip) and
``model.save("dir")`` (a SavedModel); ``tf.keras.models.load_model`` gives back the
twotower classes. The model records the dtypes and shapes its towers were first called
with (``get_build_config``), so that a reload builds them with ids as ints and strings as
strings rather than Keras's default float placeholders. Compiled metrics are not saved:
compile again after loading.
"""

import numpy as np
import tensorflow as tf

from twotower.losses import cross_replica as xr
from twotower.losses.retrieval import RetrievalLoss
from twotower.towers import compiled_execution
from twotower.metrics.top_k_recall import TopKRecall


@tf.keras.utils.register_keras_serializable(package="twotower")
class TwoTowerModel(tf.keras.Model):
    """Args:
      query_tower: a Keras layer/model mapping query inputs to [B, d].
      item_tower: a Keras layer/model mapping item inputs to [B, d].
      loss: a twotower.losses.RetrievalLoss.
      item_features: how to feed sampled ids to the item tower: None (the tower takes
        ids), or a dict of arrays [N, ...] (or one array) indexed by item id.
      item_id_key: the key of the id in a dict of item features.
      query_id_key: the key in the batch dict that holds the query's own item id.

    ``compile(metrics=[TopKRecall(...)])`` adds whole-catalogue recall@K to ``evaluate``
    (module docstring); ``save``/``load_model`` work in both Keras formats.

        model = TwoTowerModel(IDTower(num_users, 32), IDTower(num_items, 32),
                              RetrievalLoss("softmax", InBatch()))
        model.compile(optimizer="adam", metrics=[TopKRecall(ks=(10, 50))])
        model.fit(train_ds, validation_data=val_ds, epochs=3)   # val_recall@10, @50
        model.save("model.keras")
        same = tf.keras.models.load_model("model.keras")        # a TwoTowerModel
    """

    def __init__(self, query_tower, item_tower, loss, *, item_features=None,
                 item_id_key="item_id", query_id_key="query_id", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(loss, RetrievalLoss):
            raise ValueError(f"loss must be a twotower.losses.RetrievalLoss, got {loss!r}")
        for name, tower in (("query_tower", query_tower), ("item_tower", item_tower)):
            if not callable(tower):
                raise ValueError(f"{name} must be a Keras layer or model, got {tower!r}")
        self.query_tower = query_tower
        self.item_tower = item_tower
        self.retrieval_loss = loss
        self.item_id_key = item_id_key
        self.query_id_key = query_id_key
        # Non-trainable variables (not constants), so that model.save / save_weights carry
        # the table; get_config records its shapes and dtypes for from_config.
        self._item_features = _as_feature_table(item_features)
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        # Plain attributes, outside Keras's tracking (neither is model state to save):
        # the towers' input signatures (for get_build_config) and the compiled TopKRecalls.
        self.__dict__["_input_signature"] = {}
        self.__dict__["_retrieval_metrics"] = []

    @property
    def metrics(self):
        return [self.loss_tracker] + list(self._retrieval_metrics)

    def compile(self, optimizer="rmsprop", metrics=None, **kwargs):
        """Keras compile; ``metrics`` takes ``TopKRecall`` metrics (whole-catalogue recall@K
        computed in ``evaluate``), the only kind that fits a retrieval model whose loss is
        its own (there is no y_true / y_pred pair)."""
        retrieval = []
        for m in (metrics or []):
            if not isinstance(m, TopKRecall):
                raise ValueError(f"TwoTowerModel.compile(metrics=...) takes "
                                 f"twotower.TopKRecall metrics, got {m!r}")
            retrieval.append(m)
        if retrieval and self.retrieval_loss.hierarchical:
            raise ValueError("TopKRecall scores <u, v> against item-tower embeddings; a "
                             "hierarchical-softmax model scores the Huffman tree instead")
        if any(m.needs_candidates for m in retrieval) and not self._can_embed_catalogue():
            raise ValueError("TopKRecall needs the catalogue's embeddings: give the model "
                             "item_features=, use an item tower with a vocab_size (IDTower), "
                             "or pass TopKRecall(candidates=...) or searcher=")
        self.__dict__["_retrieval_metrics"] = retrieval
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        """Keras's compile config, with the TopKRecall metrics that can be serialized
        (those without a fixed candidate array or searcher)."""
        config = super().get_compile_config()
        if config is not None:
            plain = [m for m in self._retrieval_metrics
                     if m.searcher is None and not m.fixed_candidates]
            config["metrics"] = ([tf.keras.saving.serialize_keras_object(m) for m in plain]
                                 or None)
        return config

    def compile_from_config(self, config):
        """Compiles a reloaded model as it was compiled (optimizer, TopKRecall metrics);
        Keras skips models whose compile() is overridden unless they define this."""
        config = tf.keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built and isinstance(self.optimizer, tf.keras.optimizers.Optimizer):
            self.optimizer.build(self.trainable_variables)  # so its saved slots can load

    def evaluate(self, *args, **kwargs):
        """Keras evaluate, after re-embedding the catalogue for the TopKRecall metrics
        (``fit`` calls this for ``validation_data`` too)."""
        self.refresh_metric_candidates()
        return super().evaluate(*args, **kwargs)

    def refresh_metric_candidates(self):
        """Embeds the whole catalogue with the current item tower and hands it to every
        compiled TopKRecall that takes its candidates from the model."""
        waiting = [m for m in self._retrieval_metrics if m.needs_candidates]
        if waiting:
            vectors = self.catalogue_embeddings()
            for m in waiting:
                m.set_candidates(vectors)

    def _can_embed_catalogue(self):
        return self._item_features is not None or hasattr(self.item_tower, "vocab_size")

    def catalogue_embeddings(self, batch_size=4096):
        """Every item's embedding, row = item id: the item_features table through the item
        tower, or ids 0..V-1 of an item tower with a ``vocab_size`` (IDTower)."""
        if self._item_features is not None:
            return self.item_embeddings(batch_size=batch_size)
        if hasattr(self.item_tower, "vocab_size"):
            return embed(self.item_tower, np.arange(self.item_tower.vocab_size, dtype=np.int64),
                         batch_size)
        raise ValueError("the catalogue cannot be enumerated: give the model item_features= "
                         "(one row per item id)")

    # -- inputs -----------------------------------------------------------------------
    def _unpack(self, data):
        if isinstance(data, tuple) and len(data) == 1:
            data = data[0]  # Keras packs (x,) when there is no y, e.g. train_on_batch(x)
        if isinstance(data, dict):
            missing = [k for k in ("query", "item") if k not in data]
            if missing:
                raise ValueError(f"a TwoTowerModel batch needs keys 'query' and 'item'; "
                                 f"missing {missing}, got keys {sorted(data)}")
            return data["query"], data["item"], data.get(self.query_id_key)
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return data[0], data[1], None
        raise ValueError("a TwoTowerModel batch must be a dict {'query', 'item'} or a tuple "
                         f"(query, item); got {type(data).__name__}")

    def _item_ids(self, item):
        if isinstance(item, dict):
            if self.item_id_key not in item:
                raise ValueError(f"item features must hold the id under item_id_key="
                                 f"{self.item_id_key!r}; got keys {sorted(item)}")
            return item[self.item_id_key]
        return item

    def _item_inputs(self, ids):
        """Item-tower inputs for ids of any shape; returns (inputs, flattened shape)."""
        flat = tf.reshape(ids, [-1])
        if self._item_features is None:
            return flat
        if isinstance(self._item_features, dict):
            return {k: tf.gather(v, flat) for k, v in self._item_features.items()}
        return tf.gather(self._item_features, flat)

    def _embed_extra(self, ids, training):
        if ids is None:
            return None
        flat = self.item_tower(self._item_inputs(ids), training=training)
        if ids.shape.rank == 2:
            return tf.reshape(flat, tf.concat([tf.shape(ids), tf.shape(flat)[-1:]], 0))
        return flat

    # -- the step ---------------------------------------------------------------------
    def per_example_losses(self, data, training=False):
        """[B] retrieval losses of one batch, unreduced (see the module docstring)."""
        return self._forward(data, training)[0]

    def _forward(self, data, training):
        """(per-example losses [B], query embeddings [B, d], positive ids [B])."""
        query, item, query_ids = self._unpack(data)
        positive_ids = self._item_ids(item)
        # Through Model.__call__ (not the towers directly) so that Keras records the
        # input signature that model.save() needs.
        if self.retrieval_loss.hierarchical:
            u = self({"query": query}, training=training)["query"]
            return self.retrieval_loss(u, None, positive_ids), u, positive_ids
        out = self({"query": query, "item": item}, training=training)
        u, v = out["query"], out["item"]
        extra_ids = self.retrieval_loss.draw(positive_ids, training=training,
                                             query_ids=query_ids)
        extra = self._embed_extra(extra_ids, training)
        losses = self.retrieval_loss(u, v, positive_ids, extra, extra_ids, query_ids)
        return losses, u, positive_ids

    def compute_retrieval_loss(self, data, training=False):
        """Mean retrieval loss of one batch."""
        return tf.reduce_mean(self.per_example_losses(data, training=training))

    def compute_replica_loss(self, data, training=True):
        """(this replica's share of the global batch's loss, the global mean loss).

        Under a strategy with N replicas, replica r returns Σ_{i in r} ℓ_i / B_global:
        Keras' optimizer sums the replicas' gradients, so the applied gradient is the
        gradient of the global batch's mean loss, and one learning rate means the same
        for any N (Keras' compiled losses scale the same way: SUM_OVER_BATCH_SIZE over
        the global batch). Regularisation losses are divided by N (each replica adds
        them once, as Keras' ``scale_loss_for_distribution`` does). With one replica
        this is the batch mean and the regularisation as is."""
        per_example = self.per_example_losses(data, training=training)
        replicas = xr.num_replicas()
        local = tf.cast(tf.shape(per_example)[0], tf.float32)
        total = xr.global_batch_size(local)
        share = tf.reduce_sum(per_example) / total
        mean = (share if replicas == 1
                else tf.reduce_sum(per_example) * tf.cast(replicas, tf.float32) / total)
        if self.losses:
            share = share + tf.add_n(self.losses) / tf.cast(replicas, share.dtype)
        # ``mean`` averaged over the replicas (the loss tracker) is the global batch mean
        return share, mean

    def train_step(self, data):
        with tf.GradientTape() as tape:
            total, loss = self.compute_replica_loss(data, training=True)
        variables = self.trainable_variables
        grads = tape.gradient(total, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        self.loss_tracker.update_state(loss)
        return self._logs()

    def make_train_function(self, force=False):
        """Keras' train function, except that with ``jit_compile=True`` and
        ``steps_per_execution`` K > 1 the K steps of an execution run in one XLA program
        instead of one launch each (towers/compiled_execution.py), for batches of one
        static shape; others (and a distribution strategy) take Keras' loop."""
        if self.train_function is not None and not force:
            return self.train_function
        keras_function = super().make_train_function(force=True)
        capacity = (int(self._steps_per_execution.numpy())
                    if self._steps_per_execution is not None else 1)
        if (not self.jit_compile or self.run_eagerly or capacity <= 1
                or self.autotune_steps_per_execution or self._cluster_coordinator
                or tf.distribute.has_strategy()):
            return keras_function
        compiled = compiled_execution.compiled_train_function(self, capacity, self._logs)

        def train_function(iterator):
            if compiled_execution.has_static_shapes(iterator.element_spec):
                return compiled(iterator)
            return keras_function(iterator)

        self.train_function = train_function
        return train_function

    def test_step(self, data):
        losses, u, positive_ids = self._forward(data, training=False)
        self.loss_tracker.update_state(tf.reduce_mean(losses))
        exclude = data.get("exclude") if isinstance(data, dict) else None
        for metric in self._retrieval_metrics:
            metric.update_state(u, positive_ids, exclude)
        logs = self._logs()
        for metric in self._retrieval_metrics:
            logs.update(metric.result())
        return logs

    def _logs(self):
        logs = {"loss": self.loss_tracker.result()}
        if self.retrieval_loss.learn_temperature:
            logs["temperature"] = self.retrieval_loss.temperature
        return logs

    def call(self, inputs, training=False):
        """{"query": q[, "item": i]} → {"query": u[, "item": v]}; other inputs → u."""
        if isinstance(inputs, dict) and ("query" in inputs or "item" in inputs):
            out = {}
            for key in ("query", "item"):
                if key in inputs:
                    self._input_signature.setdefault(key, input_signature(inputs[key]))
                    tower = self.query_tower if key == "query" else self.item_tower
                    out[key] = tower(inputs[key], training=training)
            return out
        self._input_signature.setdefault("query", input_signature(inputs))
        return self.query_tower(inputs, training=training)

    # -- Keras v3 (.keras) loading --------------------------------------------------------
    def get_build_config(self):
        """The towers' input dtypes and shapes, recorded on the first call (JSON)."""
        if self._input_signature:
            return {"input_signature": dict(self._input_signature)}
        return super().get_build_config()

    def build_from_config(self, config):
        """Builds the towers (and a lazily built loss head) by calling them on a small
        batch of the recorded dtypes: Keras's default would call them on float32
        placeholders, which an id tower rightly refuses."""
        signature = config.get("input_signature")
        if not signature:
            return super().build_from_config(config)
        inputs = {k: inputs_from_signature(v) for k, v in signature.items()}
        out = self(inputs, training=False)
        if self.retrieval_loss.hierarchical and "item" in inputs:
            self.retrieval_loss(out["query"], None, self._item_ids(inputs["item"]))

    # -- embeddings for retrieval -------------------------------------------------------
    def query_embeddings(self, inputs, batch_size=4096):
        """Query-tower outputs for inputs (array/tensor/dict of arrays) as numpy [n, d]."""
        return embed(self.query_tower, inputs, batch_size)

    def item_embeddings(self, inputs=None, batch_size=4096):
        """Item-tower outputs as numpy [n, d]; with no inputs, the whole item_features
        table (the item corpus, in id order)."""
        if inputs is None:
            if self._item_features is None:
                raise ValueError("item_embeddings() needs inputs (ids or features) when the "
                                 "model has no item_features table")
            table = self._item_features
            inputs = ({k: v.numpy() for k, v in table.items()} if isinstance(table, dict)
                      else table.numpy())
        return embed(self.item_tower, inputs, batch_size)

    def get_config(self):
        return {
            "query_tower": tf.keras.utils.serialize_keras_object(self.query_tower),
            "item_tower": tf.keras.utils.serialize_keras_object(self.item_tower),
            "loss": tf.keras.layers.serialize(self.retrieval_loss),
            "item_id_key": self.item_id_key,
            "query_id_key": self.query_id_key,
            "item_features_spec": _feature_table_spec(self._item_features),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("query_tower", "item_tower", "loss"):
            config[key] = tf.keras.layers.deserialize(config[key], custom_objects=custom_objects)
        # placeholders of the right shapes; a reload then restores their values
        config["item_features"] = _feature_table_from_spec(config.pop("item_features_spec", None))
        return cls(**config)


def input_signature(x):
    """A JSON description of a (nested dict / list of) tensor(s): dtype and shape, the
    batch dimension left open. Read back by :func:`inputs_from_signature`."""
    if isinstance(x, dict):
        return {"dict": {str(k): input_signature(v) for k, v in x.items()}}
    if isinstance(x, (list, tuple)):
        return {"list": [input_signature(v) for v in x]}
    ragged = isinstance(x, tf.RaggedTensor)
    if not ragged and not hasattr(x, "dtype"):
        x = np.asarray(x)
    shape = [None] + [None if d is None else int(d) for d in list(x.shape)[1:]]
    return {"shape": shape, "dtype": tf.as_dtype(x.dtype).name, "ragged": ragged}


def inputs_from_signature(signature, batch_size=2):
    """Concrete placeholder inputs for ``signature``: zeros / empty strings / False, open
    dimensions of size ``batch_size`` (the batch) or 1."""
    if "dict" in signature:
        return {k: inputs_from_signature(v, batch_size) for k, v in signature["dict"].items()}
    if "list" in signature:
        return [inputs_from_signature(v, batch_size) for v in signature["list"]]
    dims = signature["shape"]
    shape = [batch_size if i == 0 else (1 if d is None else d) for i, d in enumerate(dims)]
    dtype = tf.as_dtype(signature["dtype"])
    value = (tf.fill(shape, "") if dtype == tf.string else tf.zeros(shape, dtype))
    if signature.get("ragged") and len(shape) >= 2:
        value = tf.RaggedTensor.from_tensor(value)
    return value


def embed(tower, inputs, batch_size=4096, *, desc=None, progress=True):
    """Runs ``tower`` over ``inputs`` in batches, with a progress bar; float32 [N, d].

    Args:
      tower: any callable mapping a batch to embeddings: a Keras layer/model (called with
        training=False) or, e.g., a reloaded SavedModel's function.
      inputs: an array of ids [N] / features [N, ...], or a dict of equal-length arrays.
      batch_size: rows per call.
      desc: progress-bar label (default: the tower's name).
      progress: show the bar (when there is more than one batch, on a terminal).
    """
    from tqdm.auto import tqdm

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(inputs, dict):
        n = len(next(iter(inputs.values()))) if inputs else 0
        for k, v in inputs.items():
            if len(v) != n:
                raise ValueError(f"input {k!r} has {len(v)} rows, expected {n} like the others")
        take = lambda s: {k: v[s:s + batch_size] for k, v in inputs.items()}
    else:
        n = len(inputs)
        take = lambda s: inputs[s:s + batch_size]
    if n == 0:
        raise ValueError("inputs are empty: nothing to embed")
    keras_like = hasattr(tower, "trainable_weights")  # Keras layers/models take training=
    desc = desc or f"embedding ({getattr(tower, 'name', 'tower')})"
    out = []
    # a single batch needs no bar; none in a log file either (disable=None: terminals only)
    with tqdm(total=n, desc=desc, unit="row",
              disable=True if not progress or n <= batch_size else None, leave=False) as bar:
        for s in range(0, n, batch_size):
            batch = take(s)
            emb = tower(batch, training=False) if keras_like else tower(batch)
            out.append(np.asarray(emb, dtype=np.float32))
            bar.update(len(out[-1]))
    return np.concatenate(out)


def _as_feature_table(item_features):
    if item_features is None:
        return None
    variable = lambda v, name: tf.Variable(v, trainable=False, name=f"item_features_{name}")
    if isinstance(item_features, dict):
        if not item_features:
            raise ValueError("item_features must not be an empty dict")
        table = {k: variable(v, k) for k, v in item_features.items()}
        sizes = {k: int(v.shape[0]) for k, v in table.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"item_features columns must have one row per item; got row "
                             f"counts {sizes}")
        return table
    return variable(item_features, "table")


def _feature_table_spec(table):
    spec = lambda v: [list(v.shape), v.dtype.name]
    if table is None:
        return None
    if isinstance(table, dict):
        return {k: spec(v) for k, v in table.items()}
    return {"": spec(table)}


def _feature_table_from_spec(spec):
    if spec is None:
        return None
    empty = lambda shape, dtype: (np.full(shape, "", dtype=object) if dtype == "string"
                                  else np.zeros(shape, dtype=dtype))
    table = {k: empty(shape, dtype) for k, (shape, dtype) in spec.items()}
    return table[""] if list(table) == [""] else table
