"""Plotly figures of training curves (one subplot per metric, one trace per run)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

METRIC_LABELS = {
    "loss": "training loss",
    "val_psnr": "validation PSNR (dB, Y)",
    "val_ssim": "validation SSIM (Y)",
    "lr": "learning rate",
    "it_per_s": "iterations / s",
}


def curves_figure(
    frame: pd.DataFrame, metrics: Sequence[str] = ("loss", "val_psnr"), *, height: int = 340
) -> go.Figure:
    """Curves from a long frame with columns ``run, step, name, value`` (see ``track.views.curves_frame``).

    Each run keeps one colour across the subplots and one legend entry; loss and learning rate
    use a log axis. An empty frame gives empty axes with a "no metrics yet" note.
    """
    metrics = list(metrics) or ["loss"]
    fig = make_subplots(
        rows=1, cols=len(metrics), subplot_titles=[METRIC_LABELS.get(m, m) for m in metrics], horizontal_spacing=0.1
    )
    palette = qualitative.Plotly
    runs = list(dict.fromkeys(frame["run"])) if not frame.empty else []
    for i, run in enumerate(runs):
        color = palette[i % len(palette)]
        for col, metric in enumerate(metrics, start=1):
            part = frame[(frame["run"] == run) & (frame["name"] == metric)].sort_values("step")
            if part.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=part["step"],
                    y=part["value"],
                    name=run,
                    legendgroup=run,
                    mode="lines+markers" if len(part) <= 30 else "lines",
                    line={"color": color},
                    marker={"size": 5},
                    showlegend=col == 1 or frame[(frame["run"] == run) & (frame["name"] == metrics[0])].empty,
                ),
                row=1,
                col=col,
            )
    for col, metric in enumerate(metrics, start=1):
        fig.update_xaxes(title_text="step", row=1, col=col)
        values = frame.loc[frame["name"] == metric, "value"] if not frame.empty else pd.Series(dtype=float)
        if metric in ("loss", "lr") and not values.empty and (values > 0).all():
            fig.update_yaxes(type="log", row=1, col=col)
    if not runs:
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        fig.add_annotation(text="no metrics yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_layout(
        height=height,
        template="plotly_white",
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig
