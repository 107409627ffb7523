"""Prediction-level updates: new predictions made from existing models' predictions.

::

    from flipless.posthoc import ensemble_files
    ensemble_files(["old.parquet", "new.parquet"], average="probabilities").write("e.parquet")
"""

from flipless.posthoc.ensemble import AVERAGES, Ensemble, ensemble, ensemble_files

__all__ = ["AVERAGES", "Ensemble", "ensemble", "ensemble_files"]
