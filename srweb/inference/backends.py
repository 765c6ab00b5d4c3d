"""Inference backends: what runs the network inside the :class:`~srweb.inference.Upscaler`.

``torch`` is the eager path (bf16 autocast + channels_last where it pays; the only backend on
CUDA/MPS). ``openvino`` runs the ONNX graph of ``srweb onnx`` (:func:`srweb.weights.onnx.write_onnx`),
compiled once per (weights, input shape, precision) and kept in a small cache shared by every
Upscaler of the process; new weights under a name evict the old ones' compiled models.
``onnxruntime`` runs the same graph in fp32. Everything around the network call (tiling,
self-ensemble, alpha, 16-bit, output scale) stays in the Upscaler.

Which backend runs is measured, never guessed: ``srweb bench --store`` times each one per weights
under the Set5 quality guard and writes the winner, with the processor, into the card
(``inference.backend``); :func:`choose_backend` follows it on that processor only.
"""

from __future__ import annotations

import copy
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import torch
from torch import nn

BACKENDS = ("torch", "openvino", "onnxruntime")
GRAPH_BACKENDS = ("openvino", "onnxruntime")
# Precisions each graph backend can run in (OpenVINO's INFERENCE_PRECISION_HINT names in brackets).
GRAPH_PRECISIONS = {"openvino": ("fp32", "bf16"), "onnxruntime": ("fp32",)}
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
CONVOLUTIONS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData")  # IR layer types
CACHE_SIZE = 8  # compiled models kept (one per weights x input shape x precision x fp32 ends)
# Share of the Upscaler's activation budget a graph backend's tile gets: its runtime holds more
# buffers per tile than eager torch. edsr-baseline x4 960x540 -> 3840x2160 peaked at 2,311 MB on
# OpenVINO bf16 with torch's tiles (1x2; torch bf16: 1,828 MB), 1,953 MB with half the budget, and
# 1,666 MB (1x5 tiles) with a third (OpenVINO fp32: 2,915 MB in 1x3 tiles, 1,846 MB in 3x4).
TILE_BUDGET_SHARE = 1 / 3
# With fp32 ends the last convolution's HR buffers are fp32: edsr-baseline x4 to 3840x2160 on OpenVINO bf16
# peaked at 2,181 MB with a third (1x5 tiles), 1,967 MB with a quarter (2x4), 1,795 MB with a sixth (3x4, +13% time).
FP32_ENDS_TILE_BUDGET_SHARE = 1 / 6


class BackendFallback(UserWarning):
    """A backend that was asked for cannot run here: the network runs on torch instead."""


class BackendError(RuntimeError):
    """A runtime that is missing, or cannot load or compile a graph."""


@dataclass(frozen=True)
class BackendChoice:
    """A backend and the precision it runs in; ``fp32_ends``: whether reduced precision keeps the first
    and last convolution in fp32, as the bench measured it on this processor (None: not measured, see
    :func:`wants_fp32_ends`)."""

    name: str
    precision: str
    fp32_ends: bool | None = None

    @property
    def label(self) -> str:
        return f"{self.name}/{self.precision}"


def candidates(device: str, bf16: bool) -> list[BackendChoice]:
    """Every (backend, precision) this host could run, whether or not its runtime is installed:
    torch in fp32 and (with native bf16) bf16; on CPU also each graph backend's precisions."""
    fast = ["fp32", "bf16"] if bf16 else ["fp32"]
    found = [BackendChoice("torch", p) for p in fast]
    if device == "cpu":
        for name in GRAPH_BACKENDS:
            found += [BackendChoice(name, p) for p in GRAPH_PRECISIONS[name] if p in fast]
    return found


def recorded_choice(inference: dict, processor: str) -> BackendChoice | None:
    """The winner ``srweb bench --store`` recorded in a card's ``inference`` block, if it was
    measured on ``processor`` (bf16 kernels and runtimes differ between CPU generations: a choice
    made on another processor is ignored until the bench runs here)."""
    entry = inference.get("backend")
    if not isinstance(entry, dict) or entry.get("host") != processor:
        return None
    if entry.get("name") not in BACKENDS or entry.get("precision") not in ("fp32", "bf16", "fp16"):
        return None
    return BackendChoice(entry["name"], entry["precision"])


def recorded_best(
    inference: dict, processor: str, *, backend: str | None = None, precision: str | None = None
) -> BackendChoice | None:
    """The fastest candidate that passed the guard on ``processor`` in the bench's table
    (``inference.backends``), among those of ``backend`` and ``precision`` when given."""
    table = inference.get("backends")
    if not isinstance(table, dict) or table.get("host") != processor:
        return None
    passed = []
    for label, row in (table.get("results") or {}).items():
        name, _, prec = str(label).partition("/")
        if (
            isinstance(row, dict)
            and row.get("ok")
            and isinstance(row.get("ms_per_mpix"), (int, float))
            and backend in (None, name)
            and precision in (None, prec)
            and name in BACKENDS
        ):
            passed.append((row["ms_per_mpix"], name, prec))
    return BackendChoice(*min(passed)[1:]) if passed else None


def recorded_ends(inference: dict, processor: str, label: str) -> bool | None:
    """Whether the bench ran candidate ``label`` (``openvino/bf16``) with fp32 ends on ``processor``."""
    table = inference.get("backends")
    if not isinstance(table, dict) or table.get("host") != processor:
        return None
    row = (table.get("results") or {}).get(label)
    ends = row.get("fp32_ends") if isinstance(row, dict) else None
    return ends if isinstance(ends, bool) else None


def choose_backend(
    requested: str, precision: str, inference: dict, device: str, torch_precision: str, processor: str
) -> BackendChoice:
    """:func:`pick_backend` with the fp32 ends the bench measured for that choice on ``processor``."""
    choice = pick_backend(requested, precision, inference, device, torch_precision, processor)
    return replace(choice, fp32_ends=recorded_ends(inference, processor, choice.label))


def pick_backend(
    requested: str, precision: str, inference: dict, device: str, torch_precision: str, processor: str
) -> BackendChoice:
    """The backend and precision an Upscaler runs: ``requested`` (``auto``, or a name from
    :data:`BACKENDS`) with ``precision`` (``auto`` or a name) for weights whose card holds
    ``inference``; ``torch_precision`` is what torch would run (the card's quality guard).

    ``auto`` takes the winner recorded for this ``processor`` (of that precision, if one is asked
    for) and torch when there is none or the device is not the CPU. A graph backend asked for by name
    runs in the given precision, else its fastest one that passed the guard here, else in bf16 where
    torch's guard passed bf16, else fp32.
    """
    if requested not in ("auto", *BACKENDS):
        raise ValueError(f"backend must be auto or one of {', '.join(BACKENDS)}, not {requested!r}")
    torch_choice = BackendChoice("torch", torch_precision)
    if requested == "torch":
        return torch_choice
    if requested == "auto":
        if device != "cpu":
            return torch_choice
        if precision == "auto":
            return recorded_choice(inference, processor) or torch_choice
        return recorded_best(inference, processor, precision=precision) or torch_choice
    if precision != "auto":
        return BackendChoice(requested, precision)
    best = recorded_best(inference, processor, backend=requested)
    if best:
        return best
    return BackendChoice(requested, torch_precision if torch_precision in GRAPH_PRECISIONS[requested] else "fp32")


def first_line(exc: BaseException) -> str:
    """A runtime's error in one line (OpenVINO's run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fallback(backend: str, reason: str) -> None:
    """The one ``srweb: warning:`` line (see :func:`srweb.data.folders.show_warnings_as_lines`)."""
    warnings.warn(f"{backend} backend unavailable ({reason}): running on torch", BackendFallback, stacklevel=3)


def card_backends(row: dict, processor: str) -> dict:
    """The ``inference`` entries ``--store`` writes from one contest: ``backends`` (every candidate's
    speed and guard on ``processor``) and, when one passed, ``backend`` (the winner)."""
    results = {
        label: {k: r[k] for k in ("ms_per_mpix", "first_call_ms", "psnr_delta_db", "ok", "fp32_ends") if k in r}
        for label, r in row["results"].items()
        if "ms" in r
    }
    entries: dict = {
        "backends": {
            "host": processor,
            "input": row["input"],
            "guard": f"{row['dataset']} PSNR within {row['guard_db']} dB of torch fp32",
            "results": results,
        }
    }
    if row["winner"]:
        name, precision = row["winner"].split("/")
        entries["backend"] = {
            "name": name,
            "precision": precision,
            "host": processor,
            "ms_per_mpix": results[row["winner"]]["ms_per_mpix"],
        }
    return entries


# ---- the compiled-model cache -----------------------------------------------------------------

_cache: OrderedDict[tuple, _Compiled] = OrderedDict()
_cache_lock = threading.Lock()
_sha_of_name: dict[str, str] = {}


@dataclass
class _Compiled:
    run: object  # callable: np.ndarray (1, C, H, W) float32 -> np.ndarray
    lock: threading.Lock
    seconds: float  # compile time


def cache_keys() -> list[tuple]:
    """(sha256, backend, shape, precision, fp32 ends) of every compiled model held, oldest first."""
    with _cache_lock:
        return list(_cache)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
        _sha_of_name.clear()


def _evict_changed(name: str, sha: str) -> None:
    """Weights ``name`` now have checkpoint ``sha``: drop the compiled models of the one before."""
    old = _sha_of_name.get(name)
    if old is not None and old != sha:
        for key in [k for k in _cache if k[0] == old]:
            del _cache[key]
    _sha_of_name[name] = sha


def _compiled(key: tuple, build) -> tuple[_Compiled, float]:
    """The cached entry for ``key``, built (and timed) on a miss; returns it and the seconds spent
    compiling in this call (0 on a hit)."""
    with _cache_lock:
        entry = _cache.get(key)
        if entry is not None:
            _cache.move_to_end(key)
            return entry, 0.0
    start = time.perf_counter()
    run = build()
    seconds = time.perf_counter() - start
    entry = _Compiled(run, threading.Lock(), seconds)
    with _cache_lock:
        _cache[key] = entry
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return entry, seconds


# ---- graph backends ---------------------------------------------------------------------------


def onnx_graph(model: nn.Module, card) -> Path:
    """The ONNX graph of ``model`` (loaded from ``card``) under ``cache_dir/onnx``, exported and
    checked (:func:`srweb.weights.onnx.write_onnx`) on first use; keyed by the tensors' sha256."""
    from srweb.config import get_settings
    from srweb.weights.onnx import (
        write_onnx,  # imports onnx: only graph backends need it
    )

    path = get_settings().cache_dir / "onnx" / card.sha256[:16] / f"{card.name}.onnx"
    if not path.is_file():
        # a copy: the Upscaler's own model stays channels_last (and shared with other Upscalers)
        write_onnx(copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format), card, path)
    return path


def _import_runtime(name: str):
    try:
        if name == "openvino":
            import openvino  # optional runtime: imported only when asked for

            return openvino
        import onnxruntime  # optional runtime: imported only when asked for

        return onnxruntime
    except ImportError as exc:
        raise BackendError(f"{name} is not installed: pip install {name}") from exc


def wants_fp32_ends(model: nn.Module) -> bool:
    """Whether reduced precision keeps ``model``'s first and last convolution in fp32 (torch and
    OpenVINO alike) where the bench has not measured it: luma models lose most of their bf16 error
    there, and those layers are cheap in them (1 channel in, 1 out). In RGB models the last layer
    runs at HR size with 64 input channels, so it costs more (OpenVINO bf16, idle, 2 threads:
    srresnet-x4 107 -> 353 ms, edsr-baseline-x4 186 -> 239 ms) and plain bf16 passes the guard for
    some of them; ``srweb bench`` retries a failing bf16 graph candidate with fp32 ends and records it."""
    return int(getattr(model, "in_channels", 0)) == 1


def _with_fp32_ends(ov, core, graph):
    """``graph`` with its first and last convolution marked to stay fp32 when the rest runs in bf16,
    through OpenVINO's ``precise`` runtime attribute, which the CPU plugin honours (the Python API
    cannot set it; an IR can). espcn-x4 480x270, one core: all bf16 18.0 ms and -0.0173 dB on Set5
    (outside the 0.01 dB guard), fp32 ends 28.8 ms and -0.0066 dB, only the last 25.4 ms and -0.0090."""
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = Path(tmp) / "graph.xml"
        ov.save_model(graph, str(xml_path), compress_to_fp16=False)
        tree = ElementTree.parse(xml_path)
        convs = [layer for layer in tree.getroot().iter("layer") if layer.get("type") in CONVOLUTIONS]
        if not convs:
            return graph
        for layer in {id(c): c for c in (convs[0], convs[-1])}.values():
            rt_info = layer.find("rt_info")
            if rt_info is None:
                rt_info = ElementTree.Element("rt_info")
                layer.insert(0, rt_info)
            ElementTree.SubElement(rt_info, "attribute", name="precise", version="0")
        weights = np.fromfile(xml_path.with_suffix(".bin"), dtype=np.uint8)
        return core.read_model(ElementTree.tostring(tree.getroot()), ov.Tensor(weights))


def _openvino_builder(path: Path, shape: tuple[int, ...], precision: str, threads: int, fp32_ends: bool):
    ov = _import_runtime("openvino")

    def build():
        core = ov.Core()
        graph = core.read_model(str(path))
        graph.reshape({graph.inputs[0].any_name: list(shape)})  # static shapes: the fastest kernels
        if fp32_ends:
            graph = _with_fp32_ends(ov, core, graph)
        config = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision],
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        }
        request = core.compile_model(graph, "CPU", config).create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            request.infer({0: x})
            return request.get_output_tensor(0).data.copy()

        return run

    return build


def _onnxruntime_builder(path: Path, threads: int):
    ort = _import_runtime("onnxruntime")

    def build():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"lr": x})[0]

    return build


class GraphRuntime:
    """Runs one weights entry's ONNX graph on OpenVINO or onnxruntime: ``runtime(x)`` takes a
    (1, C, H, W) float tensor in [0, 1] and gives the network's output, clamped, on the CPU.

    ``fixed_shapes``: each input shape compiles a model (OpenVINO); the Upscaler then cuts every
    tile of an image to one shape. ``compile_seconds`` adds up the compile time of the calls
    since it was last reset (the first call of a shape pays it; later ones reuse the model).
    """

    def __init__(self, backend: str, model: nn.Module, card, precision: str, fp32_ends: bool = False) -> None:
        if backend not in GRAPH_BACKENDS:
            raise BackendError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
        if precision not in GRAPH_PRECISIONS[backend]:
            raise BackendError(f"{backend} runs in {' or '.join(GRAPH_PRECISIONS[backend])}, not {precision}")
        if card is None or not card.sha256:
            raise BackendError("it runs saved weights (a name or path with a card), not a bare module")
        _import_runtime(backend)
        self.backend, self.precision, self.card = backend, precision, card
        self.fixed_shapes = backend == "openvino"
        self.path = onnx_graph(model, card)
        self.fp32_ends = fp32_ends and precision != "fp32"
        self.tile_budget_share = FP32_ENDS_TILE_BUDGET_SHARE if self.fp32_ends else TILE_BUDGET_SHARE
        self.compile_seconds = 0.0
        with _cache_lock:
            _evict_changed(card.name, card.sha256)

    def _builder(self, shape: tuple[int, ...]):
        threads = torch.get_num_threads()  # SRWEB_THREADS, as torch (srweb.config.apply_threads)
        if self.backend == "openvino":
            return _openvino_builder(self.path, shape, self.precision, threads, self.fp32_ends)
        return _onnxruntime_builder(self.path, threads)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape) if self.fixed_shapes else ()
        key = (self.card.sha256, self.backend, shape, self.precision, self.fp32_ends)
        entry, seconds = _compiled(key, self._builder(tuple(x.shape)))
        self.compile_seconds += seconds
        data = np.ascontiguousarray(x.detach().float().cpu().numpy())
        with entry.lock:  # one infer request per compiled model: calls on it take turns
            y = entry.run(data)
        return torch.from_numpy(y).clamp_(0, 1)


def make_runtime(choice: BackendChoice, model: nn.Module, card, device: str, fp32_ends: bool) -> GraphRuntime | None:
    """The runtime for ``choice``: None for torch, a :class:`GraphRuntime` otherwise; a backend
    that cannot run here (not on CPU, not installed, the graph does not load) gives the one
    warning line and None, so the network runs on torch."""
    if choice.name == "torch":
        return None
    if device != "cpu":
        fallback(choice.name, f"it runs on the CPU, this upscaler on {device}")
        return None
    try:
        return GraphRuntime(choice.name, model, card, choice.precision, fp32_ends)
    except Exception as exc:  # noqa: BLE001 - a runtime's own errors (compile, graph) vary: any of them falls back
        fallback(choice.name, first_line(exc))
        return None
