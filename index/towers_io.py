"""Save a tower as a TF SavedModel with a batch-polymorphic signature, and load it back.

A tower is any Keras layer/model (IDTower, a feature tower, a user-history model). Its
Python class need not be importable where it is loaded: the SavedModel holds the traced
graph. The signature is, in this order: an example batch when given; the signature of a
tower that was itself loaded (so a loaded retriever saves again); inferred from the
tower's own configuration (IDTower / SideInfoTower: int64 [None]; PooledIDTower: int64
[None, None]; FeatureTower: one entry per feature spec; a functional Keras model: its
``inputs``); else Keras' ``save_spec()`` of a tower that was called. The batch dimension
is always left open.

Beside the SavedModel, ``tower.json`` records the tower's class and, for an id-lookup
tower, its id range (``vocab_size``), so that a reloaded ID tower can refuse an unknown
id by name instead of failing inside the graph.
"""

import json
import os

import numpy as np
import tensorflow as tf

TOWER_INFO = "tower.json"


def _spec_of(x):
    if isinstance(x, dict):
        return {k: _spec_of(v) for k, v in x.items()}
    if isinstance(x, tf.TensorSpec):
        return tf.TensorSpec([None] + list(x.shape[1:]), x.dtype)
    t = tf.convert_to_tensor(x)
    return tf.TensorSpec([None] + list(t.shape[1:]), t.dtype)


def _feature_spec(f):
    """The input TensorSpec of one FeatureTower feature spec, or None when its dtype is
    not recorded in the spec (a ``hashed`` feature hashes ints or strings alike)."""
    kind = f.get("kind")
    if kind == "categorical":
        return tf.TensorSpec([None], tf.int64 if f.get("dtype") == "int64" else tf.string)
    if kind == "text":
        return tf.TensorSpec([None], tf.string)
    if kind == "multi_hot":
        return tf.TensorSpec([None, None], tf.string)
    if kind == "dense":
        width = len(f.get("mean") or [0])
        return tf.TensorSpec([None] if width == 1 else [None, width], tf.float32)
    if kind == "sequence":
        return tf.TensorSpec([None, None], tf.int64)
    return None


def _spec_from_config(tower):
    """The input signature a twotower tower declares through its own configuration."""
    from twotower.towers.id_tower import IDTower
    from twotower.towers.pooled_id_tower import PooledIDTower
    from twotower.towers.side_info_tower import SideInfoTower

    if isinstance(tower, PooledIDTower):
        return tf.TensorSpec([None, None], tf.int64)
    if isinstance(tower, (IDTower, SideInfoTower)):
        return tf.TensorSpec([None], tf.int64)
    features = getattr(tower, "features", None)
    if (isinstance(features, list) and features and isinstance(tower, tf.keras.layers.Layer)
            and all(isinstance(f, dict) and "kind" in f and "name" in f for f in features)):
        specs = {f["name"]: _feature_spec(f) for f in features}
        if all(s is not None for s in specs.values()):
            return specs
        return None
    if isinstance(tower, tf.keras.Model) and getattr(tower, "inputs", None):
        structure = tower.input  # a functional Keras model: its declared inputs
        if isinstance(structure, (list, tuple)):
            if len(structure) != 1:
                return None
            structure = structure[0]
        return tf.nest.map_structure(
            lambda i: tf.TensorSpec([None] + list(i.shape[1:]), i.dtype), structure)
    return None


def input_spec(tower, example=None):
    """The tower's input signature, batch dimension open (see the module docstring)."""
    if example is not None:
        return _spec_of(example)
    if isinstance(tower, LoadedTower):
        return tower.spec
    spec = _spec_from_config(tower)
    if spec is not None:
        return spec
    saved = None
    if hasattr(tower, "save_spec"):
        try:
            saved = tower.save_spec(dynamic_batch=True)
        except TypeError:
            saved = tower.save_spec()
    if saved:
        args, _ = saved
        if len(args) == 1:
            return tf.nest.map_structure(
                lambda s: tf.TensorSpec([None] + list(s.shape[1:]), s.dtype), args[0])
    raise ValueError(f"cannot infer the input signature of tower {tower!r}: a "
                     f"{type(tower).__name__} whose inputs (or their dtypes: a hashed "
                     "feature takes ints or strings alike) are not in its configuration, "
                     "and Keras recorded no call signature; pass an example batch "
                     "(query_example= / item_example=)")


def id_range(tower):
    """The id range V of an id-lookup tower (ids in [0, V)), else None."""
    if isinstance(tower, LoadedTower):
        return tower.vocab_size
    from twotower.towers.id_tower import IDTower

    return int(tower.vocab_size) if isinstance(tower, IDTower) else None


def takes_ids(tower):
    """Whether the tower takes a single integer tensor [B] (an id-lookup query tower),
    as opposed to a dict of features; None when that cannot be told."""
    try:
        spec = input_spec(tower)
    except ValueError:
        return None
    return (isinstance(spec, tf.TensorSpec) and spec.dtype.is_integer
            and spec.shape.rank == 1)


class _TowerModule(tf.Module):
    def __init__(self, tower, spec):
        super().__init__()
        self.tower = tower

        @tf.function(input_signature=[spec])
        def embed(inputs):
            return tf.cast(tower(inputs, training=False), tf.float32)

        self.embed = embed


def save_tower(tower, path, example=None):
    """Writes ``tower`` to ``path`` as a SavedModel with an ``embed`` function.

    A :class:`LoadedTower` is written again from its loaded SavedModel object (TF
    re-saves restored functions and variables), so a loaded retriever can be changed
    and saved without its original Python classes.
    """
    if isinstance(tower, LoadedTower):
        module = tower._module
        tf.saved_model.save(module, path, signatures={"serving_default": module.embed})
        info = dict(tower.info)
    else:
        module = _TowerModule(tower, input_spec(tower, example))
        tf.saved_model.save(module, path, signatures={"serving_default": module.embed})
        info = {"class": type(tower).__name__, "vocab_size": id_range(tower)}
    with open(os.path.join(path, TOWER_INFO), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)


class LoadedTower:
    """A tower reloaded from :func:`save_tower`: ``tower(inputs) -> np.ndarray [B, d]``.

    Inputs are cast to the saved dtypes (an int32 id array works for an int64
    signature); a dict input needs the signature's keys (extra keys are ignored, as
    FeatureTower ignores them). ``vocab_size`` is the id range of an id-lookup tower
    (None otherwise or when not recorded).
    """

    def __init__(self, path):
        self.path = path
        self._module = tf.saved_model.load(path)
        self.spec = self._module.embed.input_signature[0]
        info_path = os.path.join(path, TOWER_INFO)
        self.info = {}
        if os.path.exists(info_path):
            with open(info_path) as f:
                self.info = json.load(f)
        vocab = self.info.get("vocab_size")
        self.vocab_size = int(vocab) if isinstance(vocab, int) else None
        self.name = self.info.get("class", "loaded_tower")

    def __call__(self, inputs, training=False):
        del training

        def cast(x, s):
            arr = np.asarray(x)
            if s.dtype == tf.string:
                return tf.constant(arr.astype(object))
            return tf.constant(arr.astype(s.dtype.as_numpy_dtype))

        if isinstance(self.spec, dict):
            if not isinstance(inputs, dict):
                raise ValueError(f"this tower takes a dict of features {sorted(self.spec)}, "
                                 f"got {type(inputs).__name__}")
            missing = sorted(set(self.spec) - set(inputs))
            if missing:
                raise ValueError(f"tower inputs miss features {missing}; got keys "
                                 f"{sorted(inputs)}")
            inputs = {k: cast(inputs[k], s) for k, s in self.spec.items()}
        else:
            if isinstance(inputs, dict):
                raise ValueError(f"this tower takes one tensor ({self.spec.dtype.name} "
                                 f"{self.spec.shape}), got a dict with keys {sorted(inputs)}")
            inputs = cast(inputs, self.spec)
        return self._module.embed(inputs).numpy()


def load_tower(path):
    """Loads a tower folder written by :func:`save_tower` as a :class:`LoadedTower`."""
    return LoadedTower(path)
