"""twotower.towers — Keras towers and the TwoTowerModel that trains them with fit."""

from twotower.towers.attention_id_tower import AttentionPooledIDTower
from twotower.towers.evaluation import evaluate
from twotower.towers.feature_tower import (FeatureTower, categorical, dense, hashed, multi_hot,
                                           sequence, text)
from twotower.towers.id_tower import EmbeddingTable, IDTower
from twotower.towers.pooled_id_tower import PooledIDTower
from twotower.towers.top_k_recall import TopKRecall, pad_exclusions
from twotower.towers.two_tower_model import TwoTowerModel, embed

__all__ = ["AttentionPooledIDTower", "EmbeddingTable", "FeatureTower", "IDTower", "PooledIDTower", "TopKRecall",
           "TwoTowerModel", "categorical", "dense", "embed", "evaluate", "hashed", "multi_hot",
           "pad_exclusions", "sequence", "text"]
