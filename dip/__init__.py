"""Deep Image Prior (Ulyanov, Vedaldi, Lempitsky, CVPR 2018) as an experiment framework."""

__version__ = "0.1.0"


def restore(*args, **kwargs):
    """See :func:`dip.api.restore` (imported lazily: ``import dip`` stays fast)."""
    import random

    # importing Lightning draws from Python's generator, and restore() leaves the session's random state as it was
    python = random.getstate()
    from dip.api import restore as _restore

    random.setstate(python)
    return _restore(*args, **kwargs)
