"""Data: the labelled splits every source returns, the shipped data sets and update scenarios."""

from flipless.data.labeled import LabeledData, stratified_split
from flipless.data.scenario import UpdateScenario, make_update_scenario

__all__ = ["LabeledData", "UpdateScenario", "make_update_scenario", "stratified_split"]
