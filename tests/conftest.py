"""Test set-up: import twotower first, so tf.keras is Keras 2 in this process."""

import twotower  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import numpy as np
import pytest
import tensorflow as tf


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of a scalar numpy function f at x (float64)."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        hi = f(x)
        x[i] = old - eps
        lo = f(x)
        x[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


def tf_value_and_grad(f, x):
    x = tf.Variable(np.asarray(x, dtype=np.float64))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(f(x))
    return y.numpy(), tape.gradient(y, x).numpy()


@pytest.fixture
def grads():
    """(numeric_grad, tf_value_and_grad) for value-and-gradient checks against numpy."""
    return numeric_grad, tf_value_and_grad


@pytest.fixture
def served():
    """``served(retriever, [(path, body), ...])`` -> [(status, json answer), ...]: the
    retriever behind an IndexServer on 127.0.0.1 (port chosen by the OS), each body POSTed
    on its own connection (10 s timeout), the server stopped at the end."""
    import http.client
    import json

    from twotower.index.server import IndexServer

    def run(retriever, requests):
        server = IndexServer(retriever, "127.0.0.1", 0)
        server.start_background()
        answers = []
        try:
            host, port = server.server_address[:2]
            for path, body in requests:
                conn = http.client.HTTPConnection(host, port, timeout=10)
                conn.request("POST", path, json.dumps(body),
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                answers.append((response.status, json.loads(response.read())))
                conn.close()
        finally:
            server.shutdown()
        return answers

    return run
