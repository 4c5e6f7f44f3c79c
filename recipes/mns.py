"""Mixed negative sampling (Yang et al., "Mixed Negative Sampling for Learning Two-tower
Neural Networks in Recommendations", WWW 2020) on MovieLens.

The candidates of a batch are its B positives (in-batch negatives, biased towards popular
items) plus K "index negatives" drawn uniformly from the whole item corpus — every movie,
including ones never rated in training — and embedded each step by the same item tower from
the item feature table. The softmax is corrected with the mixture's expected counts,
z = s/τ − log Q(c) with Q(c) = B·p(c) + K/N, p from the streaming frequency estimator.
Towers as in the youtube recipe (history + user features; item features), cosine.

    twotower mns --index-negatives 256 --out out/mns
"""

import dataclasses
import sys

from twotower.command import run_as_main
from twotower.data.frequency import StreamingFrequencyEstimator
from twotower.data.samplers import UniformSampler
from twotower.losses import InBatch, MixedNegatives, RetrievalLoss, SampledNegatives
from twotower.recipes import two_tower_kit as common


MODES = ("mixed", "in-batch", "uniform")


@dataclasses.dataclass
class Config(common.RecipeConfig):
    """RecipeConfig plus: index_negatives K, temperature τ, alpha (frequency estimator),
    mode ("mixed"; or the ablations "in-batch" only and "uniform" index negatives only)."""

    index_negatives: int = 256
    temperature: float = 0.1
    alpha: float = 0.05
    mode: str = "mixed"

    def validate(self):
        super().validate()
        if isinstance(self.index_negatives, bool) or not isinstance(self.index_negatives, int) \
                or self.index_negatives < 1:
            raise ValueError(f"index_negatives must be an int >= 1, got {self.index_negatives!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        return self


def make_loss(config, num_items):
    """The MNS RetrievalLoss (or an ablation) for a corpus of ``num_items``."""
    if config.mode != "in-batch" and config.index_negatives > num_items:
        raise ValueError(f"--index-negatives {config.index_negatives} is larger than the item "
                         f"corpus ({num_items} items)")
    if config.mode == "uniform":
        candidates = SampledNegatives(UniformSampler(num_items, seed=config.seed),
                                      config.index_negatives, shared=True)
    else:
        freq = StreamingFrequencyEstimator(num_buckets=num_items, alpha=config.alpha)
        candidates = (InBatch(frequencies=freq) if config.mode == "in-batch" else
                      MixedNegatives(config.index_negatives, num_items, frequencies=freq))
    return RetrievalLoss("softmax", candidates, temperature=config.temperature,
                         similarity="cosine", logq=True)


def train(config):
    """Trains and evaluates; returns (model, data, metrics)."""
    config.validate()
    common.check_outputs(config)
    data = common.load_data(config)
    loss = make_loss(config, data.num_items)  # checks K against the corpus before training
    return common.train_recipe(config, loss, history=True, l2_normalize=True)


def build_parser():
    parser = common.make_parser(
        "twotower mns", "Mixed negative sampling: in-batch + uniform index negatives "
        "embedded by the item tower, mixture logQ, "
        "on MovieLens or your own log (--interactions); full-corpus evaluation.",
        Config())
    g = parser.add_argument_group("mns")
    g.add_argument("--index-negatives", type=int, default=Config.index_negatives,
                   help="K uniform index negatives per step, shared by the batch "
                   "(<= the number of items; default %(default)s)")
    g.add_argument("--temperature", type=float, default=Config.temperature,
                   help="softmax temperature τ on cosine scores (default %(default)s)")
    g.add_argument("--alpha", type=float, default=Config.alpha,
                   help="learning rate α of the streaming frequency estimator "
                   "(default %(default)s)")
    g.add_argument("--mode", choices=MODES, default=Config.mode,
                   help="mixed (MNS); in-batch only; or uniform index negatives only "
                   "(the ablations; default %(default)s)")
    return parser


def main(argv=None):
    config = common.config_from_args(Config, build_parser().parse_args(argv))
    common.check_outputs(config)  # before any data is loaded
    model, data, metrics = train(config)
    common.report(f"mns ({config.mode})", config, metrics, data, model)
    return 0


if __name__ == "__main__":
    sys.exit(run_as_main("mns", main))
