"""PNG plots of quality against wall-clock time, one line per strategy (like the paper's Figure 3)."""

from __future__ import annotations

from pathlib import Path


def plot_trajectories(results: dict[str, dict], threshold: float, path: Path, title: str) -> None:
    """``results`` maps a strategy to its result record (``finetune.trajectory`` holds seconds/quality)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=120)
    for strategy, record in results.items():
        points = record["finetune"]["trajectory"]
        xs = [p["seconds"] for p in points]
        ys = [p["quality"] for p in points]
        style = "o" if len(points) == 1 else "-"
        axis.plot(xs, ys, style, label=strategy, linewidth=1.6, markersize=5)
    axis.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
    axis.set_xlabel("wall-clock seconds since re-adaptation started (search included)")
    axis.set_ylabel("quality on D_eval")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
