"""twotower.training — what drives a model from outside: optimizers whose step costs the
rows a batch uses, and (as the recipe kit's library parts move here) the engines, the
resumable fit and the tf.distribute set-up."""

from twotower.training.lazy_adam import LazyAdam
from twotower.training.xla_adam import XLAAdam

__all__ = ["LazyAdam", "XLAAdam"]
