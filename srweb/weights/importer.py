"""Bring a community SR model (any architecture spandrel's core detects) into srweb.

The file (``.pth`` / ``.pt`` / ``.ckpt`` read with ``torch.load(weights_only=True)``, or
``.safetensors``) becomes a user weights entry: its tensors as safetensors plus a card in the format
of srweb's own weights (architecture, scale, input channels, parameter count, sha256, source,
licence, import date, and how to tile it), so it works wherever weights work. Nothing is written
unless every check passed; nothing pickled is ever executed.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from srweb.config import get_settings, resolve_device
from srweb.imaging.fileio import atomic_write
from srweb.inference.upscaler import guard_verdict, pick_precision, profile_model
from srweb.models.community import (CommunityModel, CommunityModelError, build, canonical_state_dict,
                                    has_global_operations, spandrel_version)
from srweb.weights.files import (ENSEMBLE_SUFFIX, WeightsCard, count_params, file_sha256, list_weights, weights_dirs,
                                 write_card)
from srweb.weights.hub import HubError, is_hub_ref, parse_ref

IMPORT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# The receptive-field probe: input sides tried (doubling), and the output change that counts as
# influence (below 1/255/100: a difference no 8-bit output can show).
PROBE_START, PROBE_MAX, PROBE_ATOL = 48, 192, 1e-5
NOT_GUARDED = "not measured yet (srweb bench --store)"


class ModelImportError(ValueError):
    """A model file that cannot be imported (one line for the user)."""


def max_import_bytes() -> int | None:
    """Largest model file accepted (``SRWEB_MAX_IMPORT_MB``, default 1024; 0: no limit)."""
    mb = get_settings().max_import_mb
    return None if mb is None else mb * 1024 * 1024


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a model file, refused before reading when it is over the size limit; a pickle
    is read with ``weights_only=True`` (tensors and plain containers only, no code)."""
    if path.suffix.lower() not in IMPORT_SUFFIXES:
        raise ModelImportError(f"{path.name}: not a model file (accepted: {', '.join(IMPORT_SUFFIXES)})")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelImportError(f"{path}: cannot read ({exc.strerror or exc})") from None
    limit = max_import_bytes()
    if limit and size > limit:
        raise ModelImportError(f"{path.name}: {size / 2**20:.0f} MB is over the {limit // 2**20} MB import limit "
                           f"(SRWEB_MAX_IMPORT_MB); not read")
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelImportError(f"{path.name}: corrupt or truncated safetensors file ({_one_line(exc)})") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it reads anyway
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only met something other than tensors and containers
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if refused:
            raise ModelImportError(f"{path.name}: refused, it holds more than tensors: loading it would call "
                                   f"{refused[1]} (nothing was executed)") from None
        operand = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
        raise ModelImportError(f"{path.name}: corrupt, or not a plain weights pickle "
                               f"({operand[1].strip() if operand else _one_line(exc)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, KeyError) as exc:
        raise ModelImportError(f"{path.name}: corrupt or truncated model file ({_one_line(exc)[:200]})") from None


def _one_line(exc: BaseException) -> str:
    """The first sentence of the first line of an exception's message (torch's run on for paragraphs)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(exc).__name__


def _probe(model: CommunityModel, side: int, device: str) -> tuple[int, bool]:
    """Change a centred block of ``model.tile_multiple`` pixels of a random ``side`` x ``side`` input;
    return how far (input pixels) beyond the block the output changed, and whether it reached the edge."""
    block = model.tile_multiple
    start = (side // 2) // block * block
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, model.in_channels, side, side, generator=generator)
    changed = x.clone()
    changed[..., start : start + block, start : start + block] = 1 - changed[..., start : start + block, start : start + block]
    # Deterministic cuDNN, no TF32: FFT or TF32 convolutions would spread rounding noise over the image.
    with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True,
                                                            allow_tf32=False):
        y = model(torch.cat([x, changed]).to(device)).float().cpu()
    diff = (y[0] - y[1]).abs().amax(dim=0) > PROBE_ATOL
    rows, cols = diff.any(dim=1).nonzero().flatten(), diff.any(dim=0).nonzero().flatten()
    if not len(rows):
        return 0, False
    s = model.scale
    lo = min(int(rows.min()), int(cols.min())) // s
    hi = max(int(rows.max()), int(cols.max())) // s
    reach = max(start - lo, hi - (start + block - 1), 0)
    return reach, lo <= 0 or hi >= side - 1


def receptive_radius(model: CommunityModel, device: str = "cpu") -> dict[str, Any]:
    """The model's receptive radius in input pixels, for seamless tiles: what a probe measures
    (attention windows and functional convolutions included) and at least what convolution hooks
    count. ``radius_exact`` is False when the field outgrew the largest probe, or when a layer sees the
    whole image (:func:`has_global_operations`): such tiles may differ faintly from the whole image, and
    whole images are run whenever they fit the memory budget."""
    hooks = profile_model(model, model.in_channels, model.upsampling).receptive_radius
    local = not has_global_operations(model.net)
    model.to(device)
    side = max(PROBE_START, 4 * model.tile_multiple)
    try:
        while True:
            reach, saturated = _probe(model, side, device)
            if not saturated:
                return {"receptive_radius": max(reach, hooks), "radius_exact": local, "radius_probe_px": side}
            if side * 2 > PROBE_MAX or hooks >= side:  # conv hooks already claim more than a probe could show
                # the hooks' count bounds a model of convolutions only; attention reaches further
                exact = local and hooks >= side and not has_attention(model.net)
                return {"receptive_radius": max(reach, hooks), "radius_exact": exact, "radius_probe_px": side}
            side *= 2
    finally:
        model.to("cpu")


def has_attention(net: torch.nn.Module) -> bool:
    """Whether the network mixes pixels by attention, which convolution hooks do not count."""
    return any(isinstance(m, torch.nn.MultiheadAttention) or "attn" in type(m).__name__.lower()
               or "attention" in type(m).__name__.lower() for m in net.modules())


def precision_verdict(model: CommunityModel, device: str) -> dict[str, Any]:
    """The card's ``inference`` block: fp32 where spandrel marks the fast precision unsupported; else
    not yet guarded, so fp32 until ``srweb bench --store`` measures the quality guard on Set5."""
    fast = pick_precision(device)
    if fast == "fp32":
        return {"fast_precision": "fp32", "fast_path_ok": True}
    supported = model.config["supports_bfloat16"] if fast == "bf16" else model.config["supports_half"]
    if not supported:
        return {"fast_precision": fast, "fast_path_ok": False, "guard": f"spandrel marks {model.arch} as not "
                f"supporting {fast}"}
    return {"fast_precision": fast, "fast_path_ok": False, "guard": NOT_GUARDED}


def default_name(arch: str, scale: int, stem: str) -> str:
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "imported"
    return f"{arch.lower()}-x{scale}.{tag}"


def check_name(name: str) -> None:
    """A free, file-safe name: shipped entries and other weights are never replaced."""
    if not NAME_RULE.match(name) or name.endswith(ENSEMBLE_SUFFIX) or len(name) > 120:
        raise ModelImportError(f"{name!r}: a weights name is letters, digits, '_', '.', '-' (120 at most)")
    shipped = Path(get_settings().weights_dir)
    for folder in weights_dirs():
        if (folder / f"{name}.json").exists() or (folder / f"{name}.safetensors").exists():
            kind = "a shipped entry" if folder.resolve() == shipped.resolve() else "weights already there"
            raise ModelImportError(f"{name}: the name of {kind}; choose another with --name")


def _write_entry(state: dict[str, torch.Tensor], card: WeightsCard, folder: Path) -> WeightsCard:
    """Tensors first, the card last (an entry is listed only with its card); sha256 of what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    target = atomic_write(folder / f"{card.name}.safetensors",
                          lambda tmp: save_file(tensors, str(tmp), metadata={"model": f"{card.arch}-x{card.scale}"}))
    card.sha256 = file_sha256(target)
    try:
        write_card(card, folder / f"{card.name}.json")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return card


def import_model(path: str | os.PathLike, *, name: str | None = None, source: str | None = None,
                 license: str | None = None, weights_dir: str | os.PathLike | None = None) -> WeightsCard:
    """Import a community model file (or ``hf://OWNER/REPO/FILE``) as user weights; returns its card.

    Raises:
        ModelImportError: one line saying why nothing was imported.
    """
    raw = str(path)
    if is_hub_ref(raw):
        source = source or raw
        path = download_file(raw)
    path = Path(path).expanduser()
    state = read_state_dict(path)
    try:
        canonical = canonical_state_dict(state)
        model = build(canonical)
    except CommunityModelError as exc:
        raise ModelImportError(f"{path.name}: {exc}") from None
    try:  # the first run of the model: the probe also checks its output is scale x its input
        model.config.update(receptive_radius(model, resolve_device()))
    except CommunityModelError as exc:
        raise ModelImportError(f"{path.name}: {exc}") from None
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # what broken hyperparameters raise in torch
        raise ModelImportError(f"{path.name}: spandrel built a {model.arch} x{model.scale} model from it, but it "
                               f"fails to run ({type(exc).__name__}: {_one_line(exc)[:200]})") from None
    name = name or default_name(model.arch, model.scale, path.stem)
    check_name(name)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    provenance = {"file": path.name, "file_sha256": file_sha256(path), "source": source or "",
                  "license": license or "", "imported": now, "spandrel": spandrel_version()}
    card = WeightsCard(name=name, arch=model.arch, scale=model.scale, config=dict(model.config),
                       input_kind=model.input_kind, upsampling=model.upsampling, num_params=count_params(model),
                       training={"imported": provenance}, inference=precision_verdict(model, resolve_device()),
                       created=now, notes=f"imported from {source or path.name}")
    folder = Path(weights_dir or get_settings().user_weights_dir)
    card = _write_entry(canonical, card, folder)
    return guard_fast_path(card, folder / f"{card.name}.json")


def guard_fast_path(card: WeightsCard, card_path: Path) -> WeightsCard:
    """Where the device has a fast precision the model supports, run srweb's quality guard (Set5 PSNR
    within 0.01 dB of fp32) and keep its verdict in the card; without Set5 here it stays fp32."""
    if card.inference.get("guard") != NOT_GUARDED:
        return card
    from srweb.evaluation.bench import QUALITY_GUARD_DB, psnr_delta  # pulls in training code; fast devices only

    try:
        precision, delta = psnr_delta(str(card_path))
    except (ValueError, FileNotFoundError):  # no Set5 on this machine: the card keeps fp32
        return card
    card.inference.update(guard_verdict(precision, delta, "Set5", resolve_device(), QUALITY_GUARD_DB))
    write_card(card, card_path)
    return card


def download_file(ref: str) -> Path:
    """A model file named by ``hf://OWNER/REPO/FILE[@REVISION]``, fetched into the Hub cache."""
    from huggingface_hub import hf_hub_download

    try:
        repo_id, filename, revision = parse_ref(ref)
    except HubError as exc:
        raise ModelImportError(str(exc).replace("NAME", "FILE")) from None
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, library_name="srweb"))
    except Exception as exc:  # noqa: BLE001 - offline, no such repo or file, gated, ...: one line for the user
        raise ModelImportError(f"{ref}: cannot fetch {filename} from {repo_id} ({type(exc).__name__}: "
                           f"{_one_line(exc)})") from None


def imported_provenance(card: WeightsCard) -> dict[str, Any] | None:
    """The import record of a card (source, licence, file, date), or None for srweb's own weights."""
    record = (card.training or {}).get("imported")
    return record if isinstance(record, dict) else None


def list_imported() -> list[WeightsCard]:
    return [card for card in list_weights() if imported_provenance(card)]
