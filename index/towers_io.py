"""Save a tower as a TF SavedModel with a batch-polymorphic signature, and load it back.

A tower is any Keras layer/model (IDTower, a feature tower, a user-history model). Its
Python class need not be importable where it is loaded: the SavedModel holds the traced
graph. The signature is taken from an example batch (or Keras' ``save_spec()``), with
the batch dimension left open.
"""

import numpy as np
import tensorflow as tf


def _spec_of(x):
    if isinstance(x, dict):
        return {k: _spec_of(v) for k, v in x.items()}
    t = tf.convert_to_tensor(x)
    return tf.TensorSpec([None] + list(t.shape[1:]), t.dtype)


def input_spec(tower, example=None):
    """The tower's input signature: from ``example`` (a batch) or Keras' save_spec()."""
    if example is not None:
        return _spec_of(example)
    spec = None
    if hasattr(tower, "save_spec"):
        try:
            spec = tower.save_spec(dynamic_batch=True)
        except TypeError:
            spec = tower.save_spec()
    if spec:
        args, _ = spec
        if len(args) == 1:
            return tf.nest.map_structure(
                lambda s: tf.TensorSpec([None] + list(s.shape[1:]), s.dtype), args[0])
    raise ValueError(f"cannot infer the input signature of tower {tower!r}: call it once "
                     "or pass an example batch")


class _TowerModule(tf.Module):
    def __init__(self, tower, spec):
        super().__init__()
        self.tower = tower

        @tf.function(input_signature=[spec])
        def embed(inputs):
            return tf.cast(tower(inputs, training=False), tf.float32)

        self.embed = embed


def save_tower(tower, path, example=None):
    """Writes ``tower`` to ``path`` as a SavedModel with an ``embed`` function."""
    module = _TowerModule(tower, input_spec(tower, example))
    tf.saved_model.save(module, path, signatures={"serving_default": module.embed})


class LoadedTower:
    """A tower reloaded from :func:`save_tower`: ``tower(inputs) -> np.ndarray [B, d]``.

    Inputs are cast to the saved dtypes (an int32 id array works for an int64 signature).
    """

    def __init__(self, path):
        self.path = path
        self._module = tf.saved_model.load(path)
        self.spec = self._module.embed.input_signature[0]

    def __call__(self, inputs, training=False):
        del training
        def cast(x, s):
            arr = np.asarray(x)
            if s.dtype == tf.string:
                return tf.constant(arr.astype(object))
            return tf.constant(arr.astype(s.dtype.as_numpy_dtype))
        inputs = tf.nest.map_structure(cast, inputs, self.spec) if isinstance(self.spec, dict) \
            else cast(inputs, self.spec)
        return self._module.embed(inputs).numpy()


def load_tower(path):
    return LoadedTower(path)
