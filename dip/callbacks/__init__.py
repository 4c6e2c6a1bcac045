"""Lightning callbacks that decide when a restoration stops, or which of its outputs to keep."""

from dip.callbacks.collapse import CollapseGuard
from dip.callbacks.discrepancy import DiscrepancyStopping
from dip.callbacks.early_stopping import VarianceEarlyStopping

__all__ = ["CollapseGuard", "DiscrepancyStopping", "VarianceEarlyStopping"]
