"""DSSM two-tower retrieval (Huang et al., "Learning Deep Structured Semantic Models for Web
Search using Clickthrough Data", CIKM 2013) on MovieLens.

Feature towers on both sides (query: user id, age, gender, occupation, zip and the
watch history as a pooled sequence feature; item: id, title tokens, year, genres), cosine similarity, and a softmax over the batch's positives
with smoothing factor γ = 1/τ: P(c | q) = exp(γ·cos(q, c)) / Σ_{c'} exp(γ·cos(q, c')).
DSSM sampled 4 random negatives per click; the in-batch candidates play that role here
(no logQ: the original has none). τ is fixed (``--temperature``) or learned
(``--learn-temperature``, starting from ``--temperature``).

    twotower dssm --epochs 3 --temperature 0.05 --out out/dssm
"""

import dataclasses
import sys

from twotower.command import run_as_main
from twotower.losses import InBatch, RetrievalLoss
from twotower.recipes import two_tower_kit as common


@dataclasses.dataclass
class Config(common.RecipeConfig):
    """RecipeConfig plus: temperature τ, learn_temperature, history (the watch history
    as one more query feature; the original DSSM had none — ``--no-history``)."""

    temperature: float = 0.05
    learn_temperature: bool = False
    history: bool = True

    def validate(self):
        super().validate()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        return self


def make_loss(config):
    return RetrievalLoss("softmax", InBatch(), temperature=config.temperature,
                         learn_temperature=config.learn_temperature, similarity="cosine",
                         logq=False)


def train(config):
    """Trains and evaluates; returns (model, data, metrics)."""
    return common.train_recipe(config, make_loss(config), history=config.history,
                               l2_normalize=True)


def build_parser():
    parser = common.make_parser(
        "twotower dssm", "DSSM: feature towers, cosine similarity, in-batch softmax with "
        "temperature, "
        "on MovieLens or your own log (--interactions); full-corpus evaluation.", Config())
    g = parser.add_argument_group("dssm")
    g.add_argument("--temperature", type=float, default=Config.temperature,
                   help="softmax temperature τ = 1/γ on cosine scores (default %(default)s)")
    g.add_argument("--learn-temperature", action="store_true",
                   help="learn τ (as log τ), starting from --temperature")
    g.add_argument("--no-history", dest="history", action="store_false",
                   help="query tower on user features only, as the original DSSM (on "
                   "ML-100K leave-last-out this lost to popularity in our runs)")
    return parser


def main(argv=None):
    config = common.config_from_args(Config, build_parser().parse_args(argv))
    common.check_outputs(config)  # before any data is loaded
    model, data, metrics = train(config)
    common.report("dssm", config, metrics, data, model)
    return 0


if __name__ == "__main__":
    sys.exit(run_as_main("dssm", main))
