"""Read and write prediction files, and join an old and a new model's predictions by sample id.

::

    from flipless.io import compare_files
    comparison = compare_files("old.csv", "new.parquet", slices=["domain"])
"""

from flipless.io.files import compare_files
from flipless.io.join import JOIN_MODES, JoinedPredictions, join_by_id
from flipless.io.readers import FORMATS, PredictionTable, detect_format, read_predictions
from flipless.io.writers import WRITE_FORMATS, check_output, write_predictions

__all__ = [
    "FORMATS",
    "JOIN_MODES",
    "WRITE_FORMATS",
    "JoinedPredictions",
    "PredictionTable",
    "check_output",
    "compare_files",
    "detect_format",
    "join_by_id",
    "read_predictions",
    "write_predictions",
]
