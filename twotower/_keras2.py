"""The Keras 2 guard (docs/stack.md).

TensorFlow Recommenders refuses Keras 3, so twotower runs on Keras 2 (the tf_keras
package). TensorFlow decides which Keras ``tf.keras`` means the first time an attribute of
``tf.keras`` is touched, reading the environment variable TF_USE_LEGACY_KERAS then. This
module sets that variable before TensorFlow is imported, and refuses to go on when
``tf.keras`` has already been resolved to Keras 3 in this process.
"""

import os
import sys

_ADVICE = (
    "twotower needs Keras 2 (tf_keras) because tensorflow-recommenders does not support "
    "Keras 3, but TensorFlow in this process has already resolved tf.keras to Keras 3. "
    "Import twotower before anything that touches tf.keras, or set the environment "
    "variable TF_USE_LEGACY_KERAS=1 before starting Python "
    "(e.g. `TF_USE_LEGACY_KERAS=1 python your_script.py`)."
)


def ensure_keras2() -> None:
    """Makes ``tf.keras`` resolve to tf_keras, or raises ImportError that says how."""
    if "tensorflow" not in sys.modules:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        # TensorFlow's C++ log (the cuInit error on a machine without a GPU, XLA's
        # "compiled cluster" line, oneDNN notes) drowns the output of recipes: off unless
        # TWOTOWER_DEBUG is set; a user who wants it sets TF_CPP_MIN_LOG_LEVEL themselves.
        if os.environ.get("TWOTOWER_DEBUG", "") in ("", "0"):
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        return
    import tensorflow as tf  # already imported: this costs nothing

    loader = tf.__dict__.get("keras")
    state = getattr(loader, "__dict__", {})
    if state.get("_tfll_initialized") is False:
        # TensorFlow is imported but tf.keras has not been resolved yet: still in time.
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        return
    # Resolved: either still the lazy loader (which records its choice) or, once loaded,
    # the Keras module itself, whose name tells which Keras it is.
    resolved = state.get("_tfll_keras_version") or getattr(loader, "__name__", "")
    if resolved in ("tf_keras", "keras_2") or str(resolved).startswith("tf_keras"):
        return
    raise ImportError(_ADVICE + f" (tf.keras resolved to {resolved!r})")
