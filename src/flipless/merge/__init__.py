"""Weight interpolation between an old and a new model (BCWI), Fisher weighting, soups, selection.

θ(α) = α θ_old + (1 − α) θ̄_new, with α the weight of the **old** model (METHODS.md §3);
see docs/merge.md.
"""

from flipless.merge.baselines import OutputEnsemble, greedy_soup, output_ensemble, uniform_soup
from flipless.merge.batchnorm import reestimate_batchnorm
from flipless.merge.fisher import fisher_diagonal, load_fisher, save_fisher
from flipless.merge.interpolate import interpolate
from flipless.merge.policy import MergePolicy, new_class_rows_from_names
from flipless.merge.selection import WeightSelection, interpolation_candidates, select_old_weight
from flipless.merge.sources import open_source
from flipless.merge.streaming import stream_merge
from flipless.merge.tensors import merge_tensor

__all__ = [
    "MergePolicy",
    "OutputEnsemble",
    "WeightSelection",
    "fisher_diagonal",
    "greedy_soup",
    "interpolate",
    "interpolation_candidates",
    "load_fisher",
    "merge_tensor",
    "new_class_rows_from_names",
    "open_source",
    "output_ensemble",
    "reestimate_batchnorm",
    "save_fisher",
    "select_old_weight",
    "stream_merge",
    "uniform_soup",
]
