"""import twotower makes tf.keras Keras 2, or refuses with advice (fresh processes)."""

import os
import subprocess
import sys

import pytest


def _run(code, **env):
    environ = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, timeout=120)


def test_import_twotower_first_gives_keras_2():
    r = _run("import twotower, os, tensorflow as tf, tensorflow_recommenders as tfrs\n"
             "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.Model.__module__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "tf_keras.src.engine.training"]


def test_tensorflow_imported_but_keras_untouched_is_still_in_time():
    r = _run("import tensorflow as tf\nimport twotower\nprint(tf.keras.Model.__module__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "tf_keras.src.engine.training"


def test_keras_3_already_resolved_raises_with_what_to_do():
    r = _run("import tensorflow as tf\ntf.keras.layers\nimport twotower")
    assert r.returncode != 0
    assert "ImportError" in r.stderr
    assert "TF_USE_LEGACY_KERAS=1" in r.stderr and "Import twotower before" in r.stderr
