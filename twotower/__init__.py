"""twotower: two-tower retrieval in which word2vec is the degenerate case.

Importing this package makes tf.keras mean Keras 2 (tf_keras), which TensorFlow
Recommenders needs; see twotower/_keras2.py and DESIGN.md §3.
"""

from twotower._keras2 import ensure_keras2 as _ensure_keras2

_ensure_keras2()

__version__ = "0.1.0"
