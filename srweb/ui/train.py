"""Train tab: a hyperparameter form, the job queue, live curves, cancel/resume and the log tail.

Launchable alone: ``python -m srweb.ui.train``.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd

from srweb.config import get_settings
from srweb.data.degradations import PRESET_LABELS
from srweb.data.samples import builtin_datasets
from srweb.models import get_model_info, list_models
from srweb.track import views
from srweb.train import jobs
from srweb.train.config import LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULES, ConfigError, TrainConfig
from srweb.train.launch import DuplicateLaunch, available_devices, submit_once
from srweb.ui.admin import admin_box, admin_only
from srweb.ui.charts import curves_figure
from srweb.ui.common import as_run_id, job_action
from srweb.weights.files import list_weights

# Order of the form's inputs, as the launch handler (API name ``train_launch``) receives them.
FIELDS = (
    "model",
    "scale",
    "data",
    "data_path",
    "val_data",
    "patch_size",
    "batch_size",
    "iterations",
    "lr",
    "optimizer",
    "schedule",
    "loss",
    "precision",
    "device",
    "val_interval",
    "pretrained",
    "freeze_bn",
    "ema",
    "teacher",
    "teacher_weight",
    "teacher_unlabelled",
    "degradation",
    "degradation_config",
)
NO_VAL = NO_START = NO_TEACHER = "none"
JOB_COLUMNS = ["id", "name", "status", "steps", "best PSNR", "duration", "worker"]
WORKERS_REFRESH_S = 5.0
REFRESH_S = 2.0


def trainable_models() -> list[str]:
    return list_models(include_baselines=False)


def dataset_choices() -> list[str]:
    """``sample``, then every folder under the data root (General-100, ...) and the benchmarks built
    into the package (Set5) once each, by name: the data root's copy wins, as in ``benchmark_path``."""
    root = get_settings().data_root
    found = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    found += [name for name in builtin_datasets() if name.lower() not in {f.lower() for f in found}]
    return ["sample", *sorted(found, key=str.lower)]


def start_choices(model: str) -> list[str]:
    """``none`` (from scratch) plus every checkpoint of ``model`` to fine-tune from (any scale: the
    tensors that fit transfer)."""
    return [NO_START, *(card.name for card in list_weights() if card.arch == model)]


def teacher_choices() -> list[str]:
    """``none`` plus every trained model to distil from (any architecture and scale)."""
    return [NO_TEACHER, *(card.name for card in list_weights())]


def form_defaults(model: str, scale: int | None = None) -> dict[str, Any]:
    """Form values for ``model`` from ``TrainConfig.resolved()`` (the paper's defaults)."""
    scales = get_model_info(model).scales
    scale = scale if scale in scales else (2 if 2 in scales else scales[0])
    cfg = TrainConfig(model=model, scale=scale).resolved()
    values = {name: getattr(cfg, name) for name in FIELDS if hasattr(cfg, name)}
    offered = {name.lower(): name for name in dataset_choices()}  # "Set5" is the data root's "set5" if it has one
    values.update(
        data=offered.get(cfg.data.lower(), cfg.data),
        data_path="",
        val_data=offered.get((cfg.val_data or NO_VAL).lower(), cfg.val_data or NO_VAL),
        pretrained=cfg.pretrained or NO_START,
        teacher=cfg.teacher or NO_TEACHER,
        degradation_config="",
    )
    return values


def on_model_change(model: str, scale: int | None):
    """Scale choices, the architecture's default patch size, lr, optimiser and loss, and its checkpoints."""
    if not model:
        return (gr.skip(),) * 6
    values = form_defaults(model, scale)
    scales = list(get_model_info(model).scales)
    return (
        gr.Dropdown(choices=scales, value=values["scale"]),
        values["patch_size"],
        values["lr"],
        values["optimizer"],
        values["loss"],
        gr.Dropdown(choices=start_choices(model), value=values["pretrained"]),
    )


def _whole(name: str, value: Any) -> int:
    if value is None or value == "":
        raise ConfigError(f"{name} is required")
    number = float(value)
    if number != int(number):
        raise ConfigError(f"{name} must be a whole number, got {value}")
    return int(number)


def build_config(*values: Any) -> TrainConfig:
    """A TrainConfig from the form values (in :data:`FIELDS` order); missing numbers raise ConfigError."""
    form = dict(zip(FIELDS, values, strict=True))
    if not form["model"]:
        raise ConfigError("pick a model")
    if form["lr"] is None or form["lr"] == "":
        raise ConfigError("lr is required")
    val = (form["val_data"] or "").strip()
    start = (form["pretrained"] or "").strip()
    pretrained = None if start in ("", NO_START) else start
    if pretrained is not None and pretrained not in start_choices(form["model"]):
        raise ConfigError(f"{pretrained!r} is not a checkpoint of {form['model']}; pick one of the list")
    teacher = (form["teacher"] or "").strip()
    teacher = None if teacher in ("", NO_TEACHER) else teacher
    if teacher is not None and teacher not in teacher_choices():
        raise ConfigError(f"{teacher!r} is not a trained model to distil from; pick one of the list")
    for name in ("ema", "teacher_weight"):
        if form[name] is None or form[name] == "":
            raise ConfigError(f"{name} is required")
    return TrainConfig(
        model=form["model"],
        scale=_whole("scale", form["scale"]),
        data=(form["data_path"] or "").strip() or form["data"] or None,
        val_data=None if val in ("", NO_VAL) else val,
        patch_size=_whole("patch_size", form["patch_size"]),
        batch_size=_whole("batch_size", form["batch_size"]),
        iterations=_whole("iterations", form["iterations"]),
        lr=float(form["lr"]),
        optimizer=form["optimizer"] or None,
        schedule=form["schedule"] or "constant",
        loss=form["loss"] or None,
        precision=form["precision"] or "auto",
        device=(form["device"] or "auto").strip(),
        val_interval=_whole("val_interval", form["val_interval"]),
        pretrained=pretrained,
        freeze_bn=bool(form["freeze_bn"]),
        ema=float(form["ema"]),
        teacher=teacher,
        teacher_weight=float(form["teacher_weight"]),
        teacher_unlabelled=bool(form["teacher_unlabelled"]),
        degradation=form["degradation"] or "bicubic",
        degradation_config=(form["degradation_config"] or "").strip() or {},  # JSON text: checked on launch
    )


def launch_job(*values: Any):
    """Validate and queue a run (API name ``train_launch``); returns (message, run picker, timer)."""
    try:
        run_id = submit_once(build_config(*values))
    except DuplicateLaunch as exc:  # before ValueError: it is one (a JobError)
        gr.Warning(html.escape(str(exc)))
        return f"Run #{exc.run_id} is already queued.", gr.skip(), gr.Timer(active=True)
    except (ConfigError, ValueError) as exc:
        raise gr.Error(html.escape(f"Cannot launch: {exc}"), title="Invalid hyperparameters") from None
    return (f"Queued run #{run_id}.", gr.Dropdown(choices=views.run_choices(), value=run_id), gr.Timer(active=True))


def cancel_job(run: int | str | None):
    """Cancel the selected run; a finished/failed/cancelled one gives a warning and changes nothing."""
    done = job_action(run, jobs.cancel)
    if done is None:
        return gr.skip(), gr.skip()
    return f"Run #{done[0]}: {done[1]}.", gr.Timer(active=True)


def resume_job(run: int | str | None):
    """Queue a failed or cancelled run again from its last checkpoint."""
    done = job_action(run, jobs.resume)
    if done is None:
        return gr.skip(), gr.skip()
    return f"Run #{done[0]} queued again (resumes from its last checkpoint).", gr.Timer(active=True)


def _changed(state: dict, key: str, signature: Any) -> bool:
    if state.get(key) == signature:
        return False
    state[key] = signature
    return True


def run_view(run: int | str | None, state: dict | None = None):
    """Curves (loss, val PSNR) and the log tail of one run; unchanged outputs are skipped."""
    state, run_id = dict(state or {}), as_run_id(run)
    frame = views.curves_frame([] if run_id is None else [run_id])
    if run_id is None:
        plot = curves_figure(frame) if _changed(state, "plot", None) else gr.skip()
        return plot, ("" if _changed(state, "log", None) else gr.skip()), state
    plot = curves_figure(frame) if _changed(state, "plot", (run_id, len(frame))) else gr.skip()
    try:
        log = jobs.log_tail(run_id, lines=30)
    except jobs.JobError as exc:
        log = str(exc)
    return plot, (log if _changed(state, "log", (run_id, log)) else gr.skip()), state


def refresh(run: int | str | None, state: dict | None = None):
    """One timer tick: job table, run picker, curves, log, and whether to keep ticking."""
    state, run_id = dict(state or {}), as_run_id(run)
    table = views.runs_frame(limit=20)[JOB_COLUMNS]
    choices = views.run_choices()
    ids = [value for _, value in choices]
    if run_id not in ids:
        run_id = ids[0] if ids else None
    picker = gr.Dropdown(choices=choices, value=run_id) if _changed(state, "choices", (choices, run_id)) else gr.skip()
    table_out = table if _changed(state, "table", table.to_json()) else gr.skip()
    plot, log, state = run_view(run_id, state)
    active = bool(views.active_run_ids())
    return table_out, picker, plot, log, gr.Timer(active=active), state


def pick_from_table(evt: gr.SelectData):
    """Clicking a row of the job table selects that run."""
    row = evt.row_value or []
    return int(row[0]) if row and str(row[0]).isdigit() else gr.skip()


def _data_fields(models: list[str], first: str, d: dict) -> dict[str, gr.components.Component]:
    """Model, scale and the training and validation data."""
    datasets = dataset_choices()
    model = gr.Dropdown(models, value=first, label="Model", elem_id="train-model")
    scale = gr.Dropdown(list(get_model_info(first).scales), value=d["scale"], label="Scale", elem_id="train-scale")
    with gr.Row():
        data = gr.Dropdown(datasets, value=d["data"], label="Training data", elem_id="train-data")
        val_data = gr.Dropdown(
            [NO_VAL, *datasets], value=d["val_data"], label="Validation data", elem_id="train-val-data"
        )
    data_path = gr.Textbox(label="…or a training folder path (overrides the dropdown)", elem_id="train-data-path")

    return {"model": model, "scale": scale, "data": data, "data_path": data_path, "val_data": val_data}


def _optimisation_fields(d: dict) -> dict[str, gr.components.Component]:
    """Patches, batches, steps, the optimiser and where it runs."""
    with gr.Row():
        patch = gr.Number(d["patch_size"], label="LR patch size", precision=0, elem_id="train-patch")
        batch = gr.Number(d["batch_size"], label="Batch size", precision=0, elem_id="train-batch")
    with gr.Row():
        iterations = gr.Number(d["iterations"], label="Iterations", precision=0, elem_id="train-iterations")
        val_interval = gr.Number(d["val_interval"], label="Validate every", precision=0, elem_id="train-val-interval")
    with gr.Row():
        lr = gr.Number(d["lr"], label="Learning rate", elem_id="train-lr")
        optimizer = gr.Dropdown(list(OPTIMIZERS), value=d["optimizer"], label="Optimizer", elem_id="train-optimizer")
    with gr.Row():
        schedule = gr.Dropdown(list(SCHEDULES), value=d["schedule"], label="Schedule", elem_id="train-schedule")
        loss = gr.Dropdown(list(LOSSES), value=d["loss"], label="Loss", elem_id="train-loss")
    with gr.Row():
        precision = gr.Dropdown(list(PRECISIONS), value=d["precision"], label="Precision", elem_id="train-precision")
        device = gr.Dropdown(
            available_devices(), value=d["device"], label="Device", allow_custom_value=True, elem_id="train-device"
        )
    return {
        "patch_size": patch,
        "batch_size": batch,
        "iterations": iterations,
        "val_interval": val_interval,
        "lr": lr,
        "optimizer": optimizer,
        "schedule": schedule,
        "loss": loss,
        "precision": precision,
        "device": device,
    }


def _start_fields(first: str, d: dict) -> dict[str, gr.components.Component]:
    """Where training starts (fine-tuning, BatchNorm, EMA), the teacher and the LR degradation."""
    with gr.Row():
        pretrained = gr.Dropdown(
            start_choices(first), value=d["pretrained"], label="Start from (fine-tune)", elem_id="train-pretrained"
        )
        freeze_bn = gr.Checkbox(
            d["freeze_bn"], label="Freeze BatchNorm (keep its running statistics)", elem_id="train-freeze-bn"
        )
    ema = gr.Number(
        d["ema"],
        label="Weight averaging: EMA decay (0 = off, e.g. 0.999)",
        minimum=0,
        maximum=0.99999,
        elem_id="train-ema",
    )
    with gr.Row():
        teacher = gr.Dropdown(
            teacher_choices(), value=d["teacher"], label="Distil from (teacher)", elem_id="train-teacher"
        )
        teacher_weight = gr.Number(
            d["teacher_weight"],
            label="Teacher's share of the loss",
            minimum=0.01,
            maximum=1,
            elem_id="train-teacher-weight",
        )
        teacher_unlabelled = gr.Checkbox(
            d["teacher_unlabelled"],
            elem_id="train-teacher-unlabelled",
            label="Teacher also labels the images as LR inputs",
        )
    with gr.Row():
        degradation = gr.Dropdown(
            [(f"{name}: {label}", name) for name, label in PRESET_LABELS.items()],
            value=d["degradation"],
            label="Training LR (degradation)",
            elem_id="train-degradation",
        )
        degradation_config = gr.Textbox(
            d["degradation_config"],
            label="Degradation overrides (JSON)",
            placeholder='{"final": {"jpeg": {"quality": [50, 95]}}}',
            elem_id="train-degradation-config",
        )
    return {
        "pretrained": pretrained,
        "freeze_bn": freeze_bn,
        "ema": ema,
        "teacher": teacher,
        "teacher_weight": teacher_weight,
        "teacher_unlabelled": teacher_unlabelled,
        "degradation": degradation,
        "degradation_config": degradation_config,
    }


def _build_form(models: list[str], first: str) -> dict[str, gr.components.Component]:
    """The hyperparameter inputs, laid out in the current column; returns them by :data:`FIELDS` name."""
    d = form_defaults(first)
    return {**_data_fields(models, first, d), **_optimisation_fields(d), **_start_fields(first, d)}


def build_tab(admin: gr.Textbox | None = None) -> None:
    """Lay out the Train tab inside the current Blocks context.

    Args:
        admin: the app's admin token box (public mode); the tab makes its own when None.
    """
    models = trainable_models()
    first = "espcn" if "espcn" in models else models[0]
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            inputs = _build_form(models, first)
            admin = admin if admin is not None else admin_box()
            launch = gr.Button("Launch", variant="primary", elem_id="train-launch")
            message = gr.Markdown(elem_id="train-status")
        with gr.Column(scale=2):
            jobs_table = gr.Dataframe(
                pd.DataFrame(columns=JOB_COLUMNS),
                label="Jobs (click a row to select)",
                interactive=False,
                elem_id="train-jobs",
                max_height=260,
            )
            workers = gr.Markdown(elem_id="train-workers")
            with gr.Row():
                run = gr.Dropdown(
                    [], value=None, label="Selected run", scale=3, allow_custom_value=True, elem_id="train-run"
                )
                cancel = gr.Button("Cancel", scale=1, elem_id="train-cancel")
                resume = gr.Button("Resume", scale=1, elem_id="train-resume")
                refresh_btn = gr.Button("Refresh", scale=1, elem_id="train-refresh")
            plot = gr.Plot(label="Curves", elem_id="train-plot")
            log = gr.Textbox(label="Log tail", lines=10, max_lines=10, autoscroll=True, elem_id="train-log")
    state = gr.State({})
    # Ticks once after page load (fills the table: nothing reads the database while the UI is
    # built) and keeps ticking while a run is queued or running.
    timer = gr.Timer(REFRESH_S, active=True)

    form = [inputs[name] for name in FIELDS]
    model = inputs["model"]
    model.change(
        on_model_change,
        [model, inputs["scale"]],
        [inputs[name] for name in ("scale", "patch_size", "lr", "optimizer", "loss", "pretrained")],
        api_visibility="private",
    )
    # Launch is disabled while a submission is in flight; it comes back after success or error.
    submitted = launch.click(
        lambda: gr.Button(interactive=False), None, launch, queue=False, api_visibility="private"
    ).then(
        admin_only(launch_job, "launching a training run"),
        [*form, admin],
        [message, run, timer],
        api_name="train_launch",
    )
    for after in (submitted.success, submitted.failure):
        after(lambda: gr.Button(interactive=True), None, launch, queue=False, api_visibility="private")
    refresh_outputs = [jobs_table, run, plot, log, timer, state]
    timer.tick(refresh, [run, state], refresh_outputs, show_progress="hidden", api_visibility="private")
    refresh_btn.click(refresh, [run, state], refresh_outputs, api_visibility="private")
    # The workers alive, on their own slow timer (it keeps ticking when no run is active here).
    gr.Timer(WORKERS_REFRESH_S).tick(
        views.workers_markdown, None, workers, show_progress="hidden", api_visibility="private"
    )
    refresh_btn.click(views.workers_markdown, None, workers, show_progress="hidden", api_visibility="private")
    run.change(run_view, [run, state], [plot, log, state], show_progress="hidden", api_visibility="private")
    jobs_table.select(pick_from_table, None, run, api_visibility="private")
    cancel.click(admin_only(cancel_job, "cancelling a run"), [run, admin], [message, timer], api_name="train_cancel")
    resume.click(admin_only(resume_job, "resuming a run"), [run, admin], [message, timer], api_name="train_resume")


def demo() -> gr.Blocks:
    with gr.Blocks(title="srweb · Train") as blocks:
        build_tab()
    return blocks


if __name__ == "__main__":
    from srweb.services import prepare_database, start_job_watcher

    prepare_database()
    start_job_watcher()
    demo().queue().launch()
