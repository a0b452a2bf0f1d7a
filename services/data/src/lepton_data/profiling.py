"""Moved to :mod:`lepton_ml.profiling`, shared with the monitor (its drift reference); re-exported here."""

from lepton_ml.profiling import QUANTILES, ColumnProfile, DatasetProfile, Histogram, TopValue, profile

__all__ = ["QUANTILES", "ColumnProfile", "DatasetProfile", "Histogram", "TopValue", "profile"]
