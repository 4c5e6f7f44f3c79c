"""ScaNN parameters, and the rules that choose them from the corpus size.

The rules follow the ScaNN authors' guidance (Guo et al., "Accelerating Large-Scale
Inference with Anisotropic Vector Quantization", ICML 2020; Sun et al., "SOAR: Improved
Indexing for Approximate Nearest Neighbor Search", NeurIPS 2023; the ScaNN README's
"algorithms" page):

| items            | partitioning               | scoring                          | reorder |
|------------------|----------------------------|----------------------------------|---------|
| < 20k            | none                       | exact (brute force, float32)     | —       |
| 20k – 100k       | none                       | AH, 2 dims/block, threshold 0.2  | yes     |
| 100k – 1M        | k-means tree, about √n leaves | AH, 2 dims/block, threshold 0.2 | yes   |
| ≥ 1M             | as above + SOAR spilling (λ = 1.0)  | as above                  | yes     |

TFRS's ``factorized_top_k.ScaNN`` layer instead fixes 100 leaves, searches 10, sets no
anisotropic threshold and no reorder; measured here that gave recall@10 of 0.36–0.55
on synthetic clustered 100k–1M corpora. The search-time knobs
(``num_leaves_to_search``, ``reorder``) are starting points: :func:`twotower.index.tuner.tune`
replaces them with the cheapest values that reach a target recall.
"""

import dataclasses
import math
from typing import Optional

DISTANCES = ("dot", "cosine")

BRUTE_FORCE_BELOW = 20_000
TREE_FROM = 100_000
SOAR_FROM = 1_000_000


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """How a ScaNN searcher is built and searched.

    Attributes:
      distance: "dot" (inner product) or "cosine" (items and queries are L2-normalised,
        then searched by inner product).
      brute_force: score every item exactly (float32); the other fields are ignored
        except ``distance``.
      num_leaves: k-means tree leaves; 0 means no partitioning.
      num_leaves_to_search: leaves visited per query (search-time, tunable).
      training_sample_size: items sampled to train the tree and the AH codebooks.
      dimensions_per_block: AH sub-space size (2 is ScaNN's recommendation for lut16).
      anisotropic_threshold: AH noise-shaping threshold η (0.2 is the paper's value
        for unit-norm data); ``None`` for plain (isotropic) product quantization.
      reorder: candidates re-scored exactly after AH (search-time, tunable); 0 = none.
      soar_lambda: SOAR spilling λ; ``None`` for no spilling.
      training_threads: threads for training (0 = ScaNN's default, all cores).
      tuned_k: the k the search knobs were tuned for (set by
        :func:`twotower.index.tuner.tune`; 0 = not tuned). A search asking for more
        warns: recall there was not measured.
    """

    distance: str = "dot"
    brute_force: bool = False
    num_leaves: int = 0
    num_leaves_to_search: int = 0
    training_sample_size: int = 100_000
    dimensions_per_block: int = 2
    anisotropic_threshold: Optional[float] = 0.2
    reorder: int = 0
    soar_lambda: Optional[float] = None
    training_threads: int = 0
    tuned_k: int = 0

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")
        for name in ("num_leaves", "num_leaves_to_search", "reorder", "training_threads",
                     "tuned_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if self.dimensions_per_block < 1:
            raise ValueError(
                f"dimensions_per_block must be >= 1, got {self.dimensions_per_block!r}")
        if self.training_sample_size < 1:
            raise ValueError(
                f"training_sample_size must be >= 1, got {self.training_sample_size!r}")
        if self.num_leaves and not 1 <= self.num_leaves_to_search <= self.num_leaves:
            raise ValueError(
                f"num_leaves_to_search must be in [1, num_leaves={self.num_leaves}], "
                f"got {self.num_leaves_to_search!r}")
        if self.soar_lambda is not None and not self.num_leaves:
            raise ValueError(f"soar_lambda={self.soar_lambda!r} needs num_leaves > 0")

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown IndexConfig fields {unknown}")
        return cls(**d)


def exact(distance="dot"):
    """The exact configuration: every item scored in float32 (must equal brute force)."""
    return IndexConfig(distance=distance, brute_force=True)


def for_size(num_items, *, distance="dot", **overrides):
    """Chooses an :class:`IndexConfig` for ``num_items`` items by the table above.

    Args:
      num_items: corpus size.
      distance: "dot" or "cosine".
      **overrides: any :class:`IndexConfig` field, replacing the rule's choice.

    Returns:
      An IndexConfig.
    """
    if not isinstance(num_items, int) or num_items < 1:
        raise ValueError(f"num_items must be a positive int, got {num_items!r}")
    if num_items < BRUTE_FORCE_BELOW:
        config = IndexConfig(distance=distance, brute_force=True)
    elif num_items < TREE_FROM:
        config = IndexConfig(distance=distance, reorder=100)
    else:
        leaves = int(round(math.sqrt(num_items)))
        config = IndexConfig(
            distance=distance,
            num_leaves=leaves,
            # ~3% of the leaves as a starting point; the tuner refines it.
            num_leaves_to_search=max(1, leaves // 30),
            training_sample_size=min(num_items, 100_000),
            reorder=100,
            soar_lambda=1.0 if num_items >= SOAR_FROM else None,
        )
    return dataclasses.replace(config, **overrides) if overrides else config
