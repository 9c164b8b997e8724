"""The loss curve of a run, as a PNG next to report.json."""
from __future__ import annotations

from pathlib import Path


def loss_figure(history: list[dict]):
    import matplotlib

    matplotlib.use("Agg")  # no display in a pod
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:  # a line through one point draws nothing: mark the points of a short run
        ax.plot(*zip(*train, strict=True), marker="o" if len(train) < 3 else None, label="train loss")
    if evals:
        ax.plot(*zip(*evals, strict=True), marker="o", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def write_loss_curve(history: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = loss_figure(history)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
