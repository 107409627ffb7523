"""Weight interpolation between an old and a new model (BCWI), Fisher weighting, soups, selection."""
