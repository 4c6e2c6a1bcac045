"""Lightning callbacks that decide when a restoration stops."""

from dip.callbacks.discrepancy import DiscrepancyStopping
from dip.callbacks.early_stopping import VarianceEarlyStopping

__all__ = ["DiscrepancyStopping", "VarianceEarlyStopping"]
