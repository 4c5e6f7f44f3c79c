"""twotower: two-tower retrieval in which word2vec is the degenerate case.

Importing this package makes tf.keras mean Keras 2 (tf_keras), which TensorFlow
Recommenders needs; see twotower/_keras2.py. The public names below are
loaded on first use, so `import twotower` itself stays cheap.

    import twotower
    from twotower import TwoTowerModel, IDTower, RetrievalLoss, InBatch
    from twotower import FeatureTower, TopKRecall, evaluate
"""

import importlib

from twotower._keras2 import ensure_keras2 as _ensure_keras2

_ensure_keras2()

__version__ = "0.1.0"

_EXPORTS = {
    # towers
    "IDTower": "twotower.towers", "PooledIDTower": "twotower.towers",
    "AttentionPooledIDTower": "twotower.towers",
    "TwoTowerModel": "twotower.towers",
    # feature towers (the specs are FeatureTower.categorical, .text, .multi_hot, .dense,
    # .sequence, .hashed), whole-catalogue evaluation and its Keras metric
    "FeatureTower": "twotower.towers", "evaluate": "twotower.metrics",
    "TopKRecall": "twotower.metrics", "pad_exclusions": "twotower.metrics",
    # an optimizer whose step costs the rows used, not the table size
    "LazyAdam": "twotower.training.lazy_adam",
    # Adam for an XLA-compiled step (dense moments, sparse gradients densified first)
    "XLAAdam": "twotower.training.xla_adam",
    # ID tables larger than one device (ParameterServerStrategy)
    "ShardedIDTower": "twotower.towers.sharded_id_tower",
    # losses
    "RetrievalLoss": "twotower.losses", "InBatch": "twotower.losses",
    "SampledNegatives": "twotower.losses", "MixedNegatives": "twotower.losses",
    "AllItems": "twotower.losses", "Softmax": "twotower.losses",
    "NegativeSampling": "twotower.losses", "NCE": "twotower.losses",
    "Triplet": "twotower.losses", "HierarchicalSoftmax": "twotower.losses",
    # data
    "UnigramSampler": "twotower.data.samplers", "UniformSampler": "twotower.data.samplers",
    "Sampler": "twotower.data.samplers", "AliasTable": "twotower.data.samplers",
    "StreamingFrequencyEstimator": "twotower.data.frequency",
    # a user's own log: one format (CSV or Parquet shards), one reader
    "read_interactions": "twotower.data.interactions",
    "csv_to_parquet": "twotower.data.parquet_shards",
    "interactions_dataset": "twotower.data.interactions_dataset",
    "build_vocabularies": "twotower.data.id_vocabulary",
    "IdVocabulary": "twotower.data.id_vocabulary",
    "read_feature_table": "twotower.data.feature_table",
    "load_log_task": "twotower.data.log_task",
    # the index: the user's own ids
    "UnknownIdError": "twotower.index", "ExternalIds": "twotower.index",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'twotower' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
