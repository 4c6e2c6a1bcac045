"""Lightning callbacks that decide when a restoration stops."""

from dip.callbacks.early_stopping import VarianceEarlyStopping

__all__ = ["VarianceEarlyStopping"]
