"""Leaderboard tab: PSNR/SSIM, size, speed and crowd ratings per weights entry, charts, CSV, Evaluate.

The table is :func:`srweb.track.leaderboard.leaderboard` formatted for reading; the "Evaluate"
button runs ``srweb eval ... --json`` in a subprocess (one at a time) that records its result in
the database, then refreshes the board.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import pandas as pd
from pandas.io.formats.style import Styler

from srweb.config import get_settings
from srweb.ui.admin import admin_box, admin_only
from srweb.ui.common import default_choice, parse_choice, weights_choices
from srweb.ui.leaderboard_charts import main_dataset, perception_distortion_figure, psnr_params_figure
from srweb.ui.outputs import output_dir
from srweb.weights.files import ENSEMBLE_SUFFIX, WeightsCard, WeightsError, list_weights, read_card, resolve_weights
from srweb.weights.table import paper_psnr_of
from srweb.track.db import session_scope
from srweb.track.evals import best_evaluations
from srweb.track.leaderboard import leaderboard

ALL = "all"
SCALES = (2, 3, 4)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
FOOTNOTE = (
    "MOS: mean opinion score (1 Bad … 5 Excellent, blind, vs bicubic) with a t 95% CI; MOS clean / JPEG-75: "
    "over the trials upscaled from the clean LR / from it saved as a JPEG of quality 75 (photos). "
    "Win %: share of pairs preferred over bicubic (ties count half), Wilson 95% interval (on the raters' "
    "effective count, with a t quantile). "
    "BT: Bradley–Terry log-strength vs bicubic (0 = as good as bicubic), bootstrap 95% interval. "
    "Each interval counts one rater's votes as one cluster (raters differ in taste), so few raters "
    "mean wide intervals. Votes of raters who failed the hidden checks are left out. "
    "JPEG-75: PSNR when the LR was saved as a JPEG of quality 75 before upscaling (as photos from phones "
    "and the web are; `srweb eval --degradation jpeg75`), same crop and channel. "
    "Speed: ms per output megapixel on the device named; until `srweb bench --store` runs on this "
    "host, the figure the weights' card carries (measured where they were made)."
)


# --- data -------------------------------------------------------------------------------------


def _scale_arg(scale: str | int | None) -> int | None:
    return None if scale in (None, "", ALL) else int(scale)


def load_board(scale: str | int | None = ALL, dataset: str | None = ALL) -> tuple[pd.DataFrame, list[str]]:
    """The raw leaderboard frame for the filters, and every dataset that has results."""
    cards = {card.name: card for card in list_weights()}
    # The checkpoints the app serves now; a self-ensemble result ("name+") is of its entry's checkpoint.
    versions = {name + suffix: card.sha256 for name, card in cards.items() for suffix in ("", ENSEMBLE_SUFFIX)}
    with session_scope(write=False) as session:
        names = {e.dataset for e in best_evaluations(session, versions=versions)}
        datasets = sorted(names, key=lambda d: (d.lower() != "set5", d.lower()))
        frame = leaderboard(
            session, scale=_scale_arg(scale), dataset=None if dataset in (None, "", ALL) else dataset, versions=versions
        )
    frame = _add_unscored_weights(frame, _scale_arg(scale), cards)
    frame["paper_psnr_Set5"] = pd.to_numeric(
        [paper_psnr_of(w, a, s, cards) for w, a, s in zip(frame["weights"], frame["arch"], frame["scale"])],
        errors="coerce",
    )
    return frame, datasets


def _add_unscored_weights(frame: pd.DataFrame, scale: int | None, cards: dict[str, WeightsCard]) -> pd.DataFrame:
    """Rows for shipped or exported weights with no result yet, so every entry is listed (and can be evaluated)."""
    missing = [
        {"weights": c.name, "kind": "model", "arch": c.arch, "scale": int(c.scale), "params": c.num_params}
        for c in cards.values()
        if c.name not in set(frame["weights"]) and scale in (None, int(c.scale))
    ]
    if not missing:
        return frame
    extra = pd.DataFrame(missing).reindex(columns=frame.columns)
    for column in ("n_ratings", "n_raters"):
        extra[column] = 0
    extra = extra.astype({c: t for c, t in frame.dtypes.items() if c not in ("params",)}, errors="ignore")
    merged = pd.concat([frame, extra], ignore_index=True) if len(frame) else extra
    merged["params"] = pd.to_numeric(merged["params"], errors="coerce").astype("Int64")
    return merged.sort_values("scale", kind="stable").reset_index(drop=True)


def _interval(lo: float, hi: float, digits: int = 2, factor: float = 1.0) -> str:
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return ""
    return f"[{lo * factor:.{digits}f}, {hi * factor:.{digits}f}]"


def column_digits(column: str) -> int | None:
    """Decimals a number column of the shown leaderboard keeps; None for text and counts."""
    if column.startswith(("PSNR ", "paper PSNR ", "JPEG-75 ")):
        return 2
    if column.startswith("SSIM "):
        return 4
    return {
        "params (K)": 1,
        "ms/MP": 1,
        "MOS": 2,
        "MOS clean": 2,
        "MOS JPEG-75": 2,
        "win % vs bicubic": 1,
        "BT": 2,
    }.get(column)


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as shown: rounded numbers, intervals as text, one PSNR/SSIM pair per dataset."""
    datasets = [c[len("psnr_") :] for c in frame.columns if c.startswith("psnr_")]
    out = pd.DataFrame(
        {
            "weights": frame["weights"],
            "type": frame["kind"],
            "arch": frame["arch"],
            "scale": frame["scale"].astype(int),
            "params (K)": pd.to_numeric(frame["params"], errors="coerce") / 1000,
        }
    )
    for d in datasets:
        out[f"PSNR {d}"] = frame[f"psnr_{d}"]
        if f"jpeg75_{d}" in frame:  # PSNR when the LR was saved as JPEG quality 75 (photos)
            out[f"JPEG-75 {d}"] = frame[f"jpeg75_{d}"]
        out[f"SSIM {d}"] = frame[f"ssim_{d}"]
    out["paper PSNR Set5"] = frame["paper_psnr_Set5"]
    out["ms/MP"] = frame["ms_per_mpix"]
    # a GPU figure beside CPU ones must say so, and which backend ran ("cpu, openvino/bf16")
    out["speed on"] = [
        device if not isinstance(backend, str) else f"{device}, {backend}"
        for device, backend in zip(frame["speed_device"], frame["speed_backend"])
    ]
    out["MOS"] = frame["mos"]
    # A t interval over few votes can leave the 1-5 scale; show it clipped to the scale.
    out["MOS 95% CI"] = [_interval(max(lo, 1.0), min(hi, 5.0)) for lo, hi in zip(frame["mos_lo"], frame["mos_hi"])]
    if "mos_jpeg75" in frame:  # per trial kind: upscaled from the clean LR, from a JPEG-75 LR
        out["MOS clean"] = frame["mos_clean"]
        out["MOS JPEG-75"] = frame["mos_jpeg75"]
    out["ratings"] = frame["n_ratings"]
    out["raters"] = frame["n_raters"]
    out["win % vs bicubic"] = frame["win_rate"] * 100
    out["win 95% CI"] = [_interval(lo, hi, 1, 100) for lo, hi in zip(frame["win_lo"], frame["win_hi"])]
    out["BT"] = frame["bt"]
    out["BT 95% CI"] = [_interval(lo, hi) for lo, hi in zip(frame["bt_lo"], frame["bt_hi"])]
    out = out.round({c: d for c in out.columns if (d := column_digits(c)) is not None})
    return out.astype(object).where(out.notna(), None)


def styled(table: pd.DataFrame) -> Styler:
    """``table`` (see :func:`display_frame`) with each number shown at its column's decimals: a bare
    gr.Dataframe drops trailing zeros (a paper's 33.00 would read "33" beside 32.69)."""
    return table.style.format(
        {c: f"{{:.{d}f}}" for c in table.columns if (d := column_digits(c)) is not None}, na_rep=""
    )


def protocol_note(frame: pd.DataFrame) -> str:
    """Markdown footnote: the protocol behind each dataset's PSNR/SSIM, then what the rating columns mean."""
    lines = []
    for column in (c for c in frame.columns if c.startswith("protocol_")):
        labels = sorted({str(v) for v in frame[column].dropna()})
        if labels:
            lines.append(f"**{column[len('protocol_') :]}**: {'; '.join(labels)}")
    protocol = (
        ("PSNR/SSIM protocol (channel, border shaved, LR degradation): " + " · ".join(lines))
        if lines
        else "No PSNR/SSIM recorded yet."
    )
    return f"{protocol}  \n{FOOTNOTE}"


def write_csv(frame: pd.DataFrame, scale: str | int | None = ALL, dataset: str | None = ALL) -> Path:
    """The full-precision leaderboard as CSV in a fresh request folder (removed after an hour)."""
    folder = output_dir()
    suffix = "".join(
        f"_{part}"
        for part in (
            f"x{scale}" if scale not in (None, "", ALL) else "",
            dataset if dataset not in (None, "", ALL) else "",
        )
        if part
    )
    path = folder / f"leaderboard{suffix}.csv"
    frame.to_csv(path, index=False)
    return path


def refresh(scale: str | int | None = ALL, dataset: str | None = ALL):
    """Handler: table, footnote, both charts, CSV file and the benchmark choices."""
    frame, datasets = load_board(scale, dataset)
    chart_dataset = dataset if dataset not in (None, "", ALL) else main_dataset(frame)
    return (
        styled(display_frame(frame)),
        protocol_note(frame),
        perception_distortion_figure(frame, chart_dataset),
        psnr_params_figure(frame, chart_dataset),
        str(write_csv(frame, scale, dataset)),
        gr.Dropdown(choices=[ALL, *datasets]),
    )


# --- evaluation in the background ---------------------------------------------------------------


def eval_datasets() -> list[str]:
    """Benchmarks offered for evaluation: Set5, the built-in sample set, image folders under the data root."""
    names = ["Set5", "sample"]
    root = get_settings().data_root
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if (
                child.is_dir()
                and child.name.lower() not in {n.lower() for n in names}
                and any(p.suffix.lower() in IMAGE_SUFFIXES for p in child.iterdir())
            ):
                names.append(child.name)
    return names


def eval_choices() -> list[tuple[str, str]]:
    """Weights entries (values: names) and bicubic baselines (``bicubic-xS``)."""
    return weights_choices()


def refresh_targets(current: str | None) -> gr.Dropdown:
    """The Evaluate list read afresh (weights exported since start-up appear); keeps ``current``, else
    starts where the tab starts (:func:`srweb.ui.common.default_choice`)."""
    choices = eval_choices()
    return gr.Dropdown(
        choices=choices, value=current if current in {v for _, v in choices} else default_choice(choices)
    )


def eval_target(choice: str) -> tuple[str, int]:
    """``"bicubic-x3"`` -> ("bicubic", 3); a weights name -> (name, its card's scale)."""
    name, scale = parse_choice(choice)
    if scale is None:
        try:
            scale = read_card(resolve_weights(name)[1]).scale
        except WeightsError as exc:
            raise ValueError(str(exc)) from None
    return name, int(scale)


class EvalRunner:
    """At most one ``srweb eval`` subprocess at a time; it records into the database itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.label = ""
        self.message = "No evaluation started yet."

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, weights: str, scale: int, dataset: str, self_ensemble: bool = False) -> bool:
        """Start evaluating; False (and nothing started) when one is already running."""
        with self._lock:
            if self.running:
                return False
            self.label = f"{weights}{ENSEMBLE_SUFFIX if self_ensemble else ''} x{scale} on {dataset}"
            self.message = f"Evaluating {self.label}…"
            command = [
                sys.executable,
                "-m",
                "srweb.cli",
                "eval",
                "--weights",
                weights,
                "--scale",
                str(scale),
                "--dataset",
                dataset,
                "--json",
                *(["--self-ensemble"] if self_ensemble else []),
            ]
            self._thread = threading.Thread(target=self._run, args=(command,), name="srweb-eval", daemon=True)
            self._thread.start()
            return True

    def _run(self, command: list[str]) -> None:
        started = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.message = f"Evaluation of {self.label} failed: {exc}"
            return
        seconds = time.monotonic() - started
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            self.message = f"Evaluation of {self.label} failed: {last.removeprefix('srweb: error: ')}"
            return
        try:
            result = json.loads(done.stdout)
            self.message = (
                f"Done: {result['weights']} x{result['scale']} on {result['dataset']}: "
                f"PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} ({seconds:.0f} s), recorded."
            )
        except (ValueError, KeyError, TypeError):
            self.message = f"Done: {self.label} ({seconds:.0f} s), recorded."

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


def run_evaluation(
    runner: EvalRunner,
    choice: str | None,
    dataset: str | None,
    scale: str,
    bench: str,
    self_ensemble: bool = False,
    poll: float = 1.0,
):
    """Generator handler: start the evaluation, report while it runs, then refresh the board."""
    skip_board = (gr.skip(),) * 6
    if not choice or not dataset:
        gr.Warning("Pick weights and a benchmark first.")
        yield (gr.skip(), *skip_board)
        return
    try:
        weights, eval_scale = eval_target(choice)
    except ValueError as exc:
        gr.Warning(str(exc))
        yield (gr.skip(), *skip_board)
        return
    if not runner.start(weights, eval_scale, dataset, self_ensemble):
        gr.Warning(f"An evaluation is already running ({runner.label}); wait for it to finish.")
        yield (f"Busy: {runner.message}", *skip_board)
        return
    yield (runner.message, *skip_board)
    while runner.running:
        time.sleep(poll)
    yield (runner.message, *refresh(scale, bench))


# --- layout -----------------------------------------------------------------------------------


def build_tab(tab: gr.Tab | None = None, admin: gr.Textbox | None = None) -> None:
    """Lay out the Leaderboard tab; ``tab`` (optional) refreshes the board when selected; ``admin`` is
    the app's admin token box (public mode; the tab makes its own when None)."""
    runner = EvalRunner()
    with gr.Row():
        scale = gr.Dropdown([ALL, *SCALES], value=ALL, label="Scale", elem_id="lb-scale")
        bench = gr.Dropdown([ALL], value=ALL, label="Benchmark", elem_id="lb-benchmark")
        refresh_button = gr.Button("Refresh", elem_id="lb-refresh", scale=0)
        download = gr.DownloadButton("Download CSV", elem_id="lb-csv", scale=0)
    table = gr.Dataframe(
        label="Leaderboard (click a header to sort)", interactive=False, elem_id="lb-table", max_height=480, wrap=False
    )
    note = gr.Markdown(elem_id="lb-note")
    with gr.Row():
        pd_plot = gr.Plot(label="Perception–distortion", elem_id="lb-pd-plot")
        params_plot = gr.Plot(label="PSNR vs parameters", elem_id="lb-params-plot")
    with gr.Accordion("Evaluate weights on a benchmark", open=False):
        with gr.Row():
            choices = eval_choices()
            default = default_choice(choices)
            target = gr.Dropdown(choices, value=default, label="Weights", elem_id="lb-eval-weights")
            datasets = eval_datasets()
            dataset = gr.Dropdown(datasets, value=datasets[0], label="Benchmark", elem_id="lb-eval-dataset")
            ensemble = gr.Checkbox(False, label="x8 self-ensemble (its own row, NAME+)", elem_id="lb-eval-ensemble")
            evaluate = gr.Button("Evaluate", variant="primary", elem_id="lb-evaluate", scale=0)
        admin = admin if admin is not None else admin_box()
        status = gr.Markdown(runner.message, elem_id="lb-eval-status")

    def on_evaluate(
        choice: str | None, benchmark: str | None, self_ensemble: bool, scale_filter: str, bench_filter: str
    ):
        yield from run_evaluation(runner, choice, benchmark, scale_filter, bench_filter, self_ensemble)

    outputs = [table, note, pd_plot, params_plot, download, bench]
    filters = [scale, bench]
    # Filter changes leave the benchmark dropdown alone (updating it would re-trigger its change).
    gr.on(
        [scale.change, bench.change],
        lambda s, b: refresh(s, b)[:-1],
        filters,
        outputs[:-1],
        show_progress="hidden",
        api_visibility="private",
    )
    gr.on(None, lambda: refresh(ALL, ALL), None, outputs, show_progress="hidden", api_visibility="private")
    refresh_button.click(refresh, filters, outputs, api_name="leaderboard")
    if tab is not None:
        tab.select(refresh, filters, outputs, show_progress="hidden", api_visibility="private")
        tab.select(refresh_targets, target, target, show_progress="hidden", api_visibility="private")
    evaluate.click(
        admin_only(on_evaluate, "running an evaluation"),
        [target, dataset, ensemble, scale, bench, admin],
        [status, *outputs],
        api_visibility="private",
    )


def demo() -> gr.Blocks:
    with gr.Blocks(title="srweb · Leaderboard") as blocks:
        build_tab()
    return blocks


if __name__ == "__main__":
    from srweb.services import prepare_database

    prepare_database()
    demo().queue().launch()
