"""YouTube two-tower retrieval (Yi et al., "Sampling-Bias-Corrected Neural Modeling for
Large Corpus Item Recommendations", RecSys 2019) on MovieLens.

Query tower: the user's watch history (mean-pooled item embeddings) and user features
(id, age, gender, occupation, zip); item tower: id, title tokens, year, genres. Both
L2-normalised; in-batch softmax with temperature τ and the logQ correction
z = s/τ − log p̂(c), where p̂ is the streaming frequency estimate of the paper's
Algorithm 2 (data/frequency.py), updated inside each training step. ``--no-logq`` trains
the same model without the correction (the ablation).

    twotower youtube --epochs 3 --out out/youtube
"""

import dataclasses
import sys

from twotower.command import run_as_main
from twotower.data.frequency import StreamingFrequencyEstimator
from twotower.losses import InBatch, RetrievalLoss
from twotower.recipes import two_tower_kit as common


@dataclasses.dataclass
class Config(common.RecipeConfig):
    """RecipeConfig plus: temperature τ, logq (on/off), alpha (estimator learning rate)."""

    temperature: float = 0.1
    logq: bool = True
    alpha: float = 0.05

    def validate(self):
        super().validate()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha!r}")
        return self


def make_loss(config, num_items):
    """In-batch softmax, cosine, τ, with the streaming logQ correction unless disabled."""
    freq = None
    if config.logq:
        freq = StreamingFrequencyEstimator(num_buckets=max(num_items, 1), alpha=config.alpha)
    return RetrievalLoss("softmax", InBatch(frequencies=freq), temperature=config.temperature,
                         similarity="cosine", logq=bool(config.logq))


def train(config):
    """Trains and evaluates; returns (model, data, metrics). No files are written (see
    ``main`` / ``common.report`` for that)."""
    return common.train_recipe(config, lambda data: make_loss(config, data.num_items),
                               history=True, l2_normalize=True)


def build_parser():
    parser = common.make_parser(
        "twotower youtube", "YouTube 2019 two-tower: history + user features, in-batch "
        "softmax with streaming logQ correction, "
        "on MovieLens or your own log (--interactions); full-corpus evaluation.",
        Config())
    g = parser.add_argument_group("youtube")
    g.add_argument("--temperature", type=float, default=Config.temperature,
                   help="softmax temperature τ on cosine scores (default %(default)s)")
    g.add_argument("--no-logq", dest="logq", action="store_false",
                   help="train without the logQ correction (the ablation)")
    g.add_argument("--alpha", type=float, default=Config.alpha,
                   help="learning rate α of the streaming frequency estimator "
                   "(default %(default)s)")
    return parser


def main(argv=None):
    config = common.config_from_args(Config, build_parser().parse_args(argv))
    common.check_outputs(config)  # before any data is loaded
    model, data, metrics = train(config)
    common.report("youtube" if config.logq else "youtube (no logQ)", config, metrics, data, model)
    return 0


if __name__ == "__main__":
    sys.exit(run_as_main("youtube", main))
