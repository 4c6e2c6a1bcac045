"""Deep Image Prior (Ulyanov, Vedaldi, Lempitsky, CVPR 2018) as an experiment framework."""

__version__ = "0.1.0"


def restore(*args, **kwargs):
    """See :func:`dip.api.restore` (imported lazily: ``import dip`` stays fast)."""
    from dip.api import restore as _restore

    return _restore(*args, **kwargs)
