"""twotower.index — the trained item tower as a ScaNN index: u2i and i2i retrieval at a
stated recall, one saved folder, in-place updates, a SavedModel export, HTTP serving.

    vectors   = embed(item_tower, item_features)                 # builder.py
    index     = build_index(vectors, item_ids, distance="cosine") # config.py size rules
    result    = tune(index, sample_query_vectors, target_recall=0.95)
    retriever = Retriever(index, query_tower, item_tower,        # u2i / i2i
                          item_vocab=my_item_ids)                # the user's own ids
    save(path, retriever); retriever = load(path)                # persistence.py
    # twotower serve path                                        # server.py
"""

from twotower.index.builder import build_index, embed, exact_index
from twotower.index.config import IndexConfig, for_size
from twotower.data.external_ids import ExternalIds, UnknownIdError
from twotower.index.persistence import load, save
from twotower.index.retriever import Retriever
from twotower.index.scann_index import ScannIndex
from twotower.index.tuner import TuneResult, tune

__all__ = ["ExternalIds", "IndexConfig", "Retriever", "ScannIndex", "TuneResult",
           "UnknownIdError", "build_index", "embed", "exact_index", "for_size", "load",
           "save", "tune"]
