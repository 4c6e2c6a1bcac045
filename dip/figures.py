"""Matplotlib figures as PNG bytes. Figures are made with ``matplotlib.figure.Figure``, not pyplot,
so that no global registry holds them open and no display backend is needed."""

from __future__ import annotations

import io

from matplotlib.figure import Figure


def figure_png(figure: Figure) -> bytes:
    """The figure rendered as a PNG at its own dpi."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
