"""Embedding-based retrieval (Huang et al., "Embedding-based Retrieval in Facebook Search",
KDD 2020) on MovieLens.

Cosine similarity between L2-normalised towers and a triplet (hinge) loss
max(0, m − cos(q, c⁺) + cos(q, c⁻)) with margin m (the paper found m in 0.1–0.5 best);
the negatives are the batch's other positives (the paper's "random" negatives), mined
"hard" (the hardest negative per query) or "semi-hard" (the hardest one still scored
below the positive, FaceNet's rule), or all of them. Towers as in the youtube recipe.

    twotower ebr --margin 0.3 --mining semi-hard --out out/ebr
"""

import dataclasses
import sys

from twotower.command import run_as_main
from twotower.losses import InBatch, RetrievalLoss, Triplet
from twotower.recipes import two_tower_kit as common


MINING_FLAGS = {"hard": "hardest", "semi-hard": "semi-hard", "all": "all"}


@dataclasses.dataclass
class Config(common.RecipeConfig):
    """RecipeConfig plus: margin m, mining ("hard", "semi-hard" or "all")."""

    margin: float = 0.3
    mining: str = "semi-hard"

    def validate(self):
        super().validate()
        if not self.margin > 0:
            raise ValueError(f"margin must be > 0, got {self.margin!r}")
        if self.mining not in MINING_FLAGS:
            raise ValueError(f"mining must be one of {tuple(MINING_FLAGS)}, got {self.mining!r}")
        return self


def make_loss(config):
    head = Triplet(margin=config.margin, mining=MINING_FLAGS[config.mining])
    return RetrievalLoss(head, InBatch(), similarity="cosine", logq=False)


def train(config):
    """Trains and evaluates; returns (model, data, metrics)."""
    return common.train_recipe(config, make_loss(config), history=True, l2_normalize=True)


def build_parser():
    parser = common.make_parser(
        "twotower ebr", "Facebook EBR: cosine towers, triplet loss with margin and "
        "hard/semi-hard mining over in-batch negatives, "
        "on MovieLens or your own log (--interactions); full-corpus evaluation.", Config())
    g = parser.add_argument_group("ebr")
    g.add_argument("--margin", type=float, default=Config.margin,
                   help="triplet margin m on cosine scores (default %(default)s)")
    g.add_argument("--mining", choices=tuple(MINING_FLAGS), default=Config.mining,
                   help="which in-batch negatives the hinge sees (default %(default)s)")
    return parser


def main(argv=None):
    config = common.config_from_args(Config, build_parser().parse_args(argv))
    common.check_outputs(config)  # before any data is loaded
    model, data, metrics = train(config)
    common.report("ebr", config, metrics, data, model)
    return 0


if __name__ == "__main__":
    sys.exit(run_as_main("ebr", main))
