"""Item tower → item embeddings → ScaNN searcher (scann.scann_ops_pybind.builder).

The ScaNN config text is produced by ScaNN's own builder (tree / score_ah /
score_brute_force / reorder), from an :class:`~twotower.index.config.IndexConfig`, so the
same text can build the pybind searcher (serving, updates) and the TF-ops searcher
inside a SavedModel (:mod:`twotower.index.saved_model`).

Cosine is inner product on L2-normalised vectors; ScaNN always runs "dot_product" here
(SOAR and AVQ require it).
"""

import math
import time

import numpy as np

# one embed for the whole library (towers.two_tower_model.embed), re-exported here where
# the index's users look for it
from twotower.towers.two_tower_model import embed  # noqa: F401

from twotower.index import config as config_lib
from twotower.data.external_ids import check_int_ids
from twotower.index.scann_index import (ScannIndex, check_vectors, enable_cpu_dispatch,
                                        normalize)


def scann_config_text(vectors, config, *, num_neighbors=10, soar=True):
    """ScaNN's config text (via its builder) for ``vectors`` under ``config``.

    Args:
      vectors: the (already normalised for cosine) float32 database [N, d].
      config: an IndexConfig.
      num_neighbors: the searcher's default k.
      soar: include SOAR spilling when the config asks (the TF ops cannot run it).
    """
    from scann.scann_ops.py import scann_ops_pybind

    builder = scann_ops_pybind.builder(vectors, num_neighbors, "dot_product")
    return _configure(builder, vectors.shape[0], config, soar=soar).create_config()


def _configure(builder, n, config, *, soar=True):
    if config.brute_force:
        return builder.score_brute_force()
    if config.num_leaves:
        if config.num_leaves > n:
            raise ValueError(f"num_leaves={config.num_leaves} exceeds the {n} items")
        tree = dict(num_leaves=config.num_leaves,
                    num_leaves_to_search=config.num_leaves_to_search,
                    training_sample_size=min(config.training_sample_size, n))
        if soar and config.soar_lambda is not None:
            tree["soar_lambda"] = config.soar_lambda
        builder = builder.tree(**tree)
    threshold = (float("nan") if config.anisotropic_threshold is None
                 else config.anisotropic_threshold)
    builder = builder.score_ah(config.dimensions_per_block,
                               anisotropic_quantization_threshold=threshold,
                               training_sample_size=min(config.training_sample_size, n))
    if config.reorder:
        builder = builder.reorder(config.reorder)
    return builder


def build_index(vectors, item_ids=None, config=None, *, distance="dot", **overrides):
    """Builds a :class:`ScannIndex` over item embeddings.

    Args:
      vectors: float [N, d] item embeddings (e.g. from :func:`embed`).
      item_ids: int ids [N], each >= 0 (default 0..N-1; -1 pads results, floats and
        bools are refused).
      config: an IndexConfig; default :func:`twotower.index.config.for_size` (N, distance).
      distance: "dot" or "cosine" when ``config`` is None.
      **overrides: IndexConfig fields replacing the size rule's choice.

    Returns:
      A ScannIndex; ``index.build_seconds`` holds the build time.
    """
    v = check_vectors(vectors, None, "vectors")
    n = v.shape[0]
    if config is None:
        config = config_lib.for_size(n, distance=distance, **overrides)
    elif overrides:
        raise ValueError(f"pass either config or overrides, got both ({sorted(overrides)})")
    ids = (np.arange(n, dtype=np.int64) if item_ids is None
           else check_int_ids(item_ids, "item_ids", nonnegative=True))
    if ids.shape != (n,):
        raise ValueError(f"item_ids must have shape [{n}], got {ids.shape}")
    if len(np.unique(ids)) != n:
        raise ValueError("item_ids contain duplicates")
    if config.distance == "cosine":
        v = normalize(v)
    v = np.ascontiguousarray(v, dtype=np.float32)
    enable_cpu_dispatch()  # before training: k-means and AH training use the kernels too
    start = time.perf_counter()
    searcher = build_searcher(v, config)
    index = ScannIndex(searcher, ids, v, config)
    index.build_seconds = time.perf_counter() - start
    return index


def build_searcher(vectors, config):
    """The raw ScaNN pybind searcher over ``vectors`` (already normalised for cosine,
    float32, C-contiguous) under ``config``; the tuner rebuilds with this."""
    from scann.scann_ops.py import scann_ops_pybind

    text = scann_config_text(vectors, config)
    return scann_ops_pybind.create_searcher(vectors, text, config.training_threads)


def exact_index(vectors, item_ids=None, *, distance="dot"):
    """A ScaNN index that scores every item in float32: equals brute force."""
    return build_index(vectors, item_ids, config_lib.exact(distance))


def suggested_leaves(n):
    """About √n leaves (the ScaNN README's rule of thumb)."""
    return max(1, int(round(math.sqrt(n))))
