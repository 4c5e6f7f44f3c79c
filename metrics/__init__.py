"""twotower.metrics — how well embeddings retrieve, measured exactly.

ranking: whole-catalogue ranks, recall@K / nDCG@K / MRR (one definition), exact top-k.
retrieval_report: the recipes' report (recall, nDCG, coverage, head/tail) and popularity's.
item_to_item: next-item hit rate, group purity, co-occurrence agreement of item vectors.
top_k_recall: the same exact recall as a Keras metric inside ``fit``.
word_vectors: word similarity (WordSim-353, SimLex-999) and analogies.
"""

from twotower.metrics.ranking import evaluate, metrics_from_ranks, positive_ranks, top_k
from twotower.metrics.top_k_recall import TopKRecall, pad_exclusions

__all__ = ["TopKRecall", "evaluate", "metrics_from_ranks", "pad_exclusions", "positive_ranks",
           "top_k"]
