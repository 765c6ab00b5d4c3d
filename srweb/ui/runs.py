"""Runs tab: every training run in a filterable table, overlaid curves, config JSON, weights export."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from srweb.weights.exports import ExportError, export_run_weights
from srweb.models import list_models
from srweb.track import views
from srweb.track.schema import RUN_STATUSES
from srweb.ui.admin import admin_box, admin_only
from srweb.ui.charts import METRIC_LABELS, curves_figure
from srweb.ui.common import as_run_id, job_action, weights_choices
from srweb.train import jobs

ANY = "any"
SCALES = (2, 3, 4)


def load_runs(status: str, model: str, scale: str | int, text: str, sort_by: str, descending: bool):
    """Filtered, sorted runs table plus fresh choices for the two run pickers."""
    table = views.runs_frame(
        status=None if status in (None, ANY) else status,
        model=None if model in (None, ANY) else model,
        scale=None if scale in (None, ANY) else int(scale),
        text=text,
        sort_by=sort_by or "created",
        descending=bool(descending),
    )
    choices = views.run_choices(limit=200)
    return table, gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)


def pick_from_table(compare: list[int] | None, evt: gr.SelectData):
    """A row click toggles the run in the overlay and shows its config."""
    row = evt.row_value or []
    if not row or not str(row[0]).isdigit():
        return gr.skip(), gr.skip()
    run_id = int(row[0])
    selected = [i for i in map(as_run_id, compare or []) if i is not None]
    selected = [r for r in selected if r != run_id] if run_id in selected else [*selected, run_id]
    return selected, run_id


def overlay(run_ids: list[int] | None, metrics: list[str] | None):
    """One figure, one trace per run per metric."""
    metrics = list(metrics or ["loss", "val_psnr"])
    ids = [i for i in map(as_run_id, run_ids or []) if i is not None]
    return curves_figure(views.curves_frame(ids, metrics), metrics)


def show_config(run: int | str | None):
    """The run's summary and full config as JSON."""
    run_id = as_run_id(run)
    if run_id is None:
        return None
    try:
        return views.run_details(run_id)
    except KeyError as exc:
        raise gr.Error(html.escape(str(exc.args[0]))) from None


def export_weights(run: int | str | None):
    """Copy a finished run's weights into the user weights folder (API name ``runs_export``);
    returns a message and the refreshed Upscale model list."""
    run_id = as_run_id(run)
    if run_id is None:
        gr.Warning("Select a run first.")
        return gr.skip(), gr.skip()
    try:
        card = export_run_weights(run_id)
    except ExportError as exc:
        gr.Warning(html.escape(str(exc)))
        return gr.skip(), gr.skip()
    gr.Info(f"Exported {card.name}")
    return f"Exported run #{run_id} as **{card.name}**; pick it in the Upscale tab.", refresh_weights()


def delete_run(run: int | str | None, confirmed: bool):
    """Delete a run that is not queued or running, with its checkpoints (API name ``runs_delete``;
    ``confirmed`` must be true: the browser asks first). Returns a message and clears the details."""
    if as_run_id(run) is not None and not confirmed:  # "Cancel" in the browser's dialog
        return gr.skip(), gr.skip()
    done = job_action(run, jobs.delete)
    if done is None:
        return gr.skip(), gr.skip()
    message = done[1][:1].upper() + done[1][1:]
    gr.Info(message)
    return html.escape(message) + ".", None


# The browser asks before a run and its checkpoints go; the answer is the handler's second input.
CONFIRM_DELETE_JS = (
    "(run, confirmed, token) => [run, run !== null && run !== '' && "
    "confirm(`Delete run ${run} with its checkpoints and log? Exported weights stay.`), token]"
)


def refresh_weights():
    """Current weights folder as choices for the Upscale tab's model list."""

    return gr.Dropdown(choices=weights_choices())


def _filter_row() -> tuple[list, gr.Button]:
    """The filters (status, model, scale, text, sort key, order) and the Refresh button."""
    with gr.Row():
        status = gr.Dropdown([ANY, *RUN_STATUSES], value=ANY, label="Status", elem_id="runs-status")
        model = gr.Dropdown(
            [ANY, *list_models(include_baselines=False)], value=ANY, label="Model", elem_id="runs-model"
        )
        scale = gr.Dropdown([ANY, *SCALES], value=ANY, label="Scale", elem_id="runs-scale")
        text = gr.Textbox(label="Name or id contains", elem_id="runs-text")
        sort_by = gr.Dropdown(list(views.SORT_KEYS), value="created", label="Sort by", elem_id="runs-sort")
        descending = gr.Checkbox(True, label="Descending", elem_id="runs-desc")
        refresh = gr.Button("Refresh", elem_id="runs-refresh", scale=0)
    return [status, model, scale, text, sort_by, descending], refresh


def _curves_column() -> tuple[gr.Dropdown, gr.CheckboxGroup, gr.Plot]:
    """The runs whose curves are overlaid, the metrics shown, and the plot."""
    with gr.Column(scale=2):
        compare = gr.Dropdown(
            [], value=[], multiselect=True, allow_custom_value=True, label="Overlay curves of", elem_id="runs-compare"
        )
        metrics = gr.CheckboxGroup(
            [(METRIC_LABELS[m], m) for m in ("loss", "val_psnr", "val_ssim", "lr")],
            value=["loss", "val_psnr"],
            label="Metrics",
            elem_id="runs-metrics",
        )
        plot = gr.Plot(label="Curves", elem_id="runs-plot")
    return compare, metrics, plot


def _wire_export(export: gr.Button, detail, admin, action_msg, weights_dropdown: gr.Dropdown | None) -> None:
    """Export weights; with the Upscale tab's list given, it is refreshed on load and after an export."""
    if weights_dropdown is None:
        export.click(
            admin_only(lambda run_id: export_weights(run_id)[0], "exporting weights"),
            [detail, admin],
            action_msg,
            api_name="runs_export",
        )
        return
    export.click(
        admin_only(export_weights, "exporting weights"),
        [detail, admin],
        [action_msg, weights_dropdown],
        api_name="runs_export",
    )
    gr.on(None, refresh_weights, None, weights_dropdown, show_progress="hidden", api_visibility="private")


def build_tab(
    tab: gr.Tab | None = None, weights_dropdown: gr.Dropdown | None = None, admin: gr.Textbox | None = None
) -> None:
    """Lay out the Runs tab inside the current Blocks context.

    Args:
        tab: the enclosing tab; selecting it reloads the table.
        weights_dropdown: the Upscale tab's model list; it is refreshed on page load and right
            after an export, so exported weights show up without a restart.
        admin: the app's admin token box (public mode); the tab makes its own when None.
    """
    filters, refresh = _filter_row()
    table = gr.Dataframe(
        pd.DataFrame(columns=list(views.RUN_COLUMNS)),
        label="Runs (click rows to compare)",
        interactive=False,
        elem_id="runs-table",
        max_height=360,
    )
    workers = gr.Markdown(elem_id="runs-workers")
    with gr.Row():
        compare, metrics, plot = _curves_column()
        with gr.Column(scale=1):
            detail = gr.Dropdown([], value=None, label="Run details", allow_custom_value=True, elem_id="runs-detail")
            config = gr.JSON(label="Config", elem_id="runs-config")
            admin = admin if admin is not None else admin_box()
            with gr.Row():
                export = gr.Button("Export weights", elem_id="runs-export")
                remove = gr.Button("Delete run", variant="stop", elem_id="runs-delete")
            action_msg = gr.Markdown(elem_id="runs-action-status")
            confirmed = gr.Checkbox(False, visible=False)

    outputs = [table, compare, detail]
    hidden = {"show_progress": "hidden", "api_visibility": "private"}
    gr.on(None, load_runs, filters, outputs, **hidden)  # load + filter changes
    refresh.click(load_runs, filters, outputs, api_name="runs_list")
    gr.on([refresh.click] + ([tab.select] if tab is not None else []), views.workers_markdown, None, workers, **hidden)
    if tab is not None:
        tab.select(load_runs, filters, outputs, **hidden)
    table.select(pick_from_table, [compare], [compare, detail], api_visibility="private")
    gr.on([compare.change, metrics.change], overlay, [compare, metrics], plot, **hidden)
    detail.change(show_config, detail, config, api_visibility="private")
    remove.click(
        admin_only(delete_run, "deleting a run"),
        [detail, confirmed, admin],
        [action_msg, detail],
        js=CONFIRM_DELETE_JS,
        api_name="runs_delete",
    ).then(load_runs, filters, outputs, **hidden)
    _wire_export(export, detail, admin, action_msg, weights_dropdown)


def demo() -> gr.Blocks:
    with gr.Blocks(title="srweb · Runs") as blocks:
        build_tab()
    return blocks


if __name__ == "__main__":
    from srweb.services import prepare_database

    prepare_database()
    demo().queue().launch()
