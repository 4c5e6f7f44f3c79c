"""The tf.distribute set-up of ``--strategy``: one strategy a process, the TF_CONFIG check
of a multi-worker cluster, and which process writes the outputs."""

import json
import os

import tensorflow as tf

STRATEGIES = ("none", "mirrored", "multi-worker")
_STRATEGIES = {}


def make_strategy(name):
    """The tf.distribute strategy of ``--strategy`` (one per process, created on first use).

    none: the default strategy (one device). mirrored: ``tf.distribute.MirroredStrategy()``
    over the GPUs of this machine (the CPU when there are none). multi-worker:
    ``tf.distribute.MultiWorkerMirroredStrategy()``, one process per machine, the cluster
    and this process's task read from the ``TF_CONFIG`` environment variable. Create it
    before any other TensorFlow work: multi-worker sets up collective ops at startup.
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "none":
        return tf.distribute.get_strategy()
    if name not in _STRATEGIES:
        if name == "multi-worker":
            check_tf_config(os.environ.get("TF_CONFIG"))
            _STRATEGIES[name] = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            _STRATEGIES[name] = tf.distribute.MirroredStrategy()
    return _STRATEGIES[name]


def check_tf_config(text):
    """Raises ValueError unless ``text`` (TF_CONFIG) is JSON with a cluster holding this
    task: {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker",
    "index": i}}."""
    if not text:
        raise ValueError("--strategy multi-worker needs TF_CONFIG, e.g. TF_CONFIG='{\"cluster\":"
                         " {\"worker\": [\"host1:12345\", \"host2:12345\"]}, \"task\": "
                         "{\"type\": \"worker\", \"index\": 0}}' (see the README)")
    try:
        tf_config = json.loads(text)
        task = tf_config["task"]
        hosts = tf_config["cluster"][task["type"]]
        if not 0 <= int(task["index"]) < len(hosts):
            raise IndexError(task["index"])
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"TF_CONFIG {text!r} is not a cluster with this task in it "
                         f"({type(e).__name__}: {e})") from None
    return tf_config


def is_chief(strategy):
    """Whether this process writes outputs: always without a cluster; under
    multi-worker, the chief (worker 0 when the cluster names no chief)."""
    return bool(getattr(strategy.extended, "should_checkpoint", True))
