"""twotower.towers — Keras towers and the TwoTowerModel that trains them with fit."""

from twotower.towers.id_tower import IDTower
from twotower.towers.pooled_id_tower import PooledIDTower
from twotower.towers.two_tower_model import TwoTowerModel, embed

__all__ = ["IDTower", "PooledIDTower", "TwoTowerModel", "embed"]
