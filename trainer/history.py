"""history.json and training.png: what a run learned, epoch by epoch."""

from __future__ import annotations

import io
import json
from typing import Any


def history_json(history: dict[str, list[float]], facts: dict[str, Any]) -> bytes:
    """The per-epoch metrics (train and validation) plus the run's final facts."""
    epochs = len(next(iter(history.values()), []))
    doc = {"epochs": list(range(1, epochs + 1)), "metrics": history, "final": facts}
    return (json.dumps(doc, indent=2) + "\n").encode()


def training_plot(history: dict[str, list[float]], title: str) -> bytes:
    """PNG of loss, accuracy and bits per character per epoch, train and validation."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a training server
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [("loss", "loss (nats/char)"), ("accuracy", "accuracy"), ("bpc", "bits per char")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    for ax, (key, label) in zip(axes, panels, strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key)
            if values:
                epochs = range(1, len(values) + 1)
                ax.plot(
                    epochs,
                    values,
                    style,
                    marker="o" if len(values) < 30 else None,
                    markersize=3,
                    label="validation" if prefix else "train",
                )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
