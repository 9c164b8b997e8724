"""The loss curve: every logged point is visible."""
from __future__ import annotations

import pytest

from hyft_trainer.report import loss_figure


@pytest.mark.parametrize("points", [1, 2])
def test_a_short_run_marks_its_loss_points(points):
    """One logged loss is a line of one point, which matplotlib draws as nothing."""
    import matplotlib.pyplot as plt

    fig = loss_figure([{"step": s, "loss": 2.0 - s / 10} for s in range(1, points + 1)])
    try:
        (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "train loss"]
        assert line.get_marker() not in (None, "", "None", " ")
    finally:
        plt.close(fig)
