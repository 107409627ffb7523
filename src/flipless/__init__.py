"""flipless: regression-free model updates.

Measure what an update from an old to a new model breaks (negative flips, BTC, BEC, …),
and gate releases on it::

    import flipless
    comparison = flipless.compare(old_logits, new_logits, labels)
    print(comparison.negative_flip_rate, comparison.backward_trust_compatibility)
"""

from flipless._version import __version__
from flipless.errors import FileFormatError, FliplessError, InputError, MismatchError
from flipless.metrics.comparison import Comparison, compare
from flipless.metrics.counts import FlipCounts, Rate
from flipless.metrics.versions import flip_chain, pairwise_negative_flip_rates


def __getattr__(name: str) -> object:
    # FlipMetric needs torchmetrics (and so torch): import it only when asked for.
    if name == "FlipMetric":
        from flipless.metrics.streaming import FlipMetric

        return FlipMetric
    raise AttributeError(f"module 'flipless' has no attribute {name!r}")


__all__ = [
    "Comparison",
    "FileFormatError",
    "FlipCounts",
    "FlipMetric",
    "FliplessError",
    "InputError",
    "MismatchError",
    "Rate",
    "__version__",
    "compare",
    "flip_chain",
    "pairwise_negative_flip_rates",
]
