"""Plotly figures of the leaderboard: the perception-distortion plane and PSNR against model size.

Both take the frame of :func:`srweb.track.leaderboard.leaderboard` and a dataset name (its
``psnr_<dataset>`` column); entries are coloured by scale, reference rows drawn apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

REFERENCE_LABELS = {"bicubic": "bicubic", "nearest": "nearest neighbour", "hr": "HR (ground truth)"}
_LAYOUT = {
    "template": "plotly_white",
    "height": 380,
    "margin": {"l": 55, "r": 20, "t": 50, "b": 50},
    "legend": {"orientation": "h", "y": -0.2},
}


def main_dataset(frame: pd.DataFrame) -> str | None:
    """The first dataset with a PSNR column (the leaderboard puts Set5 first)."""
    return next((c[len("psnr_") :] for c in frame.columns if c.startswith("psnr_")), None)


def _on(dataset: str | None) -> str:
    return f" on {dataset}" if dataset else ""


def _scale_color(scale: int) -> str:
    return qualitative.Plotly[int(scale) % len(qualitative.Plotly)]


def _empty_note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font={"color": "#888"})


def _finite(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").replace([np.inf, -np.inf], np.nan).notna()


def perception_distortion_figure(frame: pd.DataFrame, dataset: str | None = None) -> go.Figure:
    """PSNR (x) against MOS (y) with 95% CI error bars (clipped to the 1-5 scale), one point per rated entry.

    Reference rows with a PSNR (bicubic once evaluated) are diamonds; those without (HR,
    nearest neighbour) are dashed horizontal lines at their MOS.
    """
    dataset = dataset or main_dataset(frame)
    psnr_col = f"psnr_{dataset}"
    fig = go.Figure()
    rated = frame[_finite(frame["mos"])] if "mos" in frame else frame.iloc[0:0]
    has_psnr = _finite(rated[psnr_col]) if psnr_col in rated else pd.Series(False, index=rated.index)
    plotted = 0
    for (kind, scale), part in rated[has_psnr].groupby(["kind", "scale"], sort=True):
        reference = kind == "reference"
        fig.add_trace(
            go.Scatter(
                x=part[psnr_col],
                y=part["mos"],
                mode="markers+text",
                text=part["weights"],
                textposition="top center",
                name=f"{'reference' if reference else 'models'} x{scale}",
                marker={
                    "size": 11,
                    "symbol": "diamond" if reference else "circle",
                    "color": "#888" if reference else _scale_color(scale),
                    "line": {"width": 1, "color": "#333"},
                },
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (part["mos_hi"].clip(upper=5) - part["mos"]).fillna(0),
                    "arrayminus": (part["mos"] - part["mos_lo"].clip(lower=1)).fillna(0),
                },
                customdata=np.stack([part["n_ratings"], part["mos_lo"], part["mos_hi"]], axis=-1),
                hovertemplate="%{text}<br>PSNR %{x:.2f} dB<br>MOS %{y:.2f} [%{customdata[1]:.2f}, %{customdata[2]:.2f}]"
                "<br>%{customdata[0]} ratings<extra></extra>",
            )
        )
        plotted += len(part)
    lines = rated[~has_psnr & (rated["kind"] == "reference")]
    for record in lines.to_dict("records"):
        label = f"{REFERENCE_LABELS.get(record['weights'], record['weights'])} x{record['scale']}"
        fig.add_hline(
            y=record["mos"],
            line_dash="dash",
            line_color="#aaa",
            annotation_text=f"{label}: MOS {record['mos']:.2f}",
            annotation_position="top left",
        )
    if not plotted:
        _empty_note(fig, "no rated entry with a PSNR yet: rate some pairs in the Rate tab")
    fig.update_layout(title=f"Perception–distortion plane{_on(dataset)}", **_LAYOUT)
    fig.update_xaxes(title_text=f"PSNR{_on(dataset)} (dB, Y) → less distortion")
    fig.update_yaxes(title_text="MOS (1–5) → better perceived quality", range=[0.8, 5.4])
    return fig


def psnr_params_figure(frame: pd.DataFrame, dataset: str | None = None) -> go.Figure:
    """PSNR against parameter count (log axis); bicubic, when evaluated, as a dashed line per scale
    that has models (every evaluated scale when none has)."""
    dataset = dataset or main_dataset(frame)
    psnr_col = f"psnr_{dataset}"
    fig = go.Figure()
    if psnr_col in frame:
        params = pd.to_numeric(frame["params"], errors="coerce")
        models = frame[(frame["kind"] == "model") & _finite(frame[psnr_col]) & (params > 0)]
        for scale, part in models.groupby("scale", sort=True):
            part = part.sort_values("params", kind="stable")
            fig.add_trace(
                go.Scatter(
                    x=part["params"].astype(float),
                    y=part[psnr_col],
                    mode="markers+text",
                    text=part["weights"],
                    # neighbours' labels alternate above and below their points, so they do not overlap
                    textposition=["top center" if i % 2 == 0 else "bottom center" for i in range(len(part))],
                    name=f"x{scale}",
                    marker={"size": 10, "color": _scale_color(scale)},
                    hovertemplate="%{text}<br>%{x:,.0f} parameters<br>PSNR %{y:.2f} dB<extra></extra>",
                )
            )
        baselines = frame[(frame["weights"] == "bicubic") & _finite(frame[psnr_col])]
        if not models.empty:  # a line per plotted scale: bicubic x7 is no reference for x2-x4 models
            baselines = baselines[baselines["scale"].isin(models["scale"])]
        for record in baselines.to_dict("records"):
            fig.add_hline(
                y=record[psnr_col],
                line_dash="dash",
                line_color=_scale_color(record["scale"]),
                annotation_text=f"bicubic x{record['scale']}: {record[psnr_col]:.2f} dB",
                annotation_position="bottom right",
            )
        if models.empty:
            _empty_note(fig, "no model with both a PSNR and a parameter count")
    else:
        _empty_note(fig, "no evaluation yet")
    fig.update_layout(title=f"PSNR vs parameters{_on(dataset)}", **_LAYOUT)
    fig.update_xaxes(type="log", title_text="parameters (log scale)")
    if psnr_col in frame and not models.empty:  # room for the labels of the smallest and largest models
        span = np.log10(models["params"].astype(float))
        fig.update_xaxes(range=[span.min() - 0.4, span.max() + 0.6])
    fig.update_yaxes(title_text=f"PSNR{_on(dataset)} (dB, Y)")
    return fig
