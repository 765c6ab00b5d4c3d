"""Checkpoints in safetensors with a JSON model card beside them.

``weights/NAME.safetensors`` holds the tensors, ``weights/NAME.json`` the card: architecture,
scale, config, input kind, training provenance, metrics with their protocol, parameter count
and the file's sha256. Nothing is ever unpickled: foreign ``.pth`` files are imported with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from srweb.config import get_settings
from srweb.errors import first_line
from srweb.imaging.fileio import atomic_write, atomic_write_bytes
from srweb.models import create_model
from srweb.models.community import COMMUNITY_LOADER, CommunityModelError, load_community
from srweb.weights.hub import HubError, download, is_hub_ref

# Results of a weights entry under the x8 self-ensemble are named "<name>+" (after EDSR+, Lim et al. 2017).
ENSEMBLE_SUFFIX = "+"


class WeightsError(ValueError):
    """Weights that cannot be found or do not match their card."""


@dataclass
class WeightsCard:
    """Metadata that travels with a checkpoint."""

    name: str
    arch: str
    scale: int
    config: dict[str, Any]
    input_kind: str
    upsampling: str
    num_params: int
    sha256: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    inference: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WeightsCard":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def training_chain(self) -> list[dict[str, Any]]:
        """The training runs that made these weights, oldest first: each ``training`` record
        (config, iterations, wall_seconds, data, ...); a fine-tuned card holds its parent's."""
        return training_chain({"training": self.training})

    def metric(self, dataset: str = "Set5", degradation: str = "matlab-bicubic") -> dict[str, Any] | None:
        """The card's result on ``dataset`` (case-insensitive) with LR made by ``degradation`` (the
        protocol's; default the classic MATLAB bicubic; ``"matlab-bicubic+jpeg75"`` for JPEG-75), if any."""
        for entry in self.metrics:
            made_by = (entry.get("protocol") or {}).get("degradation") or "matlab-bicubic"
            if str(entry.get("dataset", "")).lower() == dataset.lower() and made_by == degradation:
                return entry
        return None

    @property
    def imported(self) -> bool:
        """A community model brought in by ``srweb import`` (built by spandrel, not trained here)."""
        return self.config.get("loader") == COMMUNITY_LOADER

    @property
    def for_photos(self) -> bool:
        """Trained on degraded LR (``--degradation jpeg`` or ``realistic``): meant for photos and JPEGs,
        not a reproduction of a paper's clean-bicubic setting."""
        chain = self.training_chain()
        return bool(chain and chain[-1]["config"].get("degradation_config"))


def training_chain(card: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``training`` records of a card dict and its parents, oldest first."""
    chain, training = [], card.get("training") or {}
    while training.get("config"):
        chain.append({k: v for k, v in training.items() if k != "parent"})
        training = (training.get("parent") or {}).get("training") or {}
    return chain[::-1]


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (shared weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_weights(
    model: nn.Module,
    name: str,
    *,
    weights_dir: Path | None = None,
    training: dict[str, Any] | None = None,
    metrics: list[dict[str, Any]] | None = None,
    inference: dict[str, Any] | None = None,
    notes: str = "",
) -> WeightsCard:
    """Write ``NAME.safetensors`` and ``NAME.json`` atomically; return the card.

    ``model`` must come from :func:`srweb.create_model` (it carries arch, scale and config).
    """
    directory = Path(weights_dir or get_settings().weights_dir)
    # One metadata key: safetensors writes several in a random order, so equal tensors would get
    # different bytes (and sha256) from one save to the next.
    target = atomic_write(directory / f"{name}.safetensors",
                          lambda tmp: save_model(model, tmp, metadata={"model": f"{model.arch}-x{model.scale}"}))
    card = WeightsCard(
        name=name,
        arch=model.arch,
        scale=int(model.scale),
        config=dict(model.config),
        input_kind=model.input_kind,
        upsampling=model.upsampling,
        num_params=count_params(model),
        sha256=file_sha256(target),
        training=training or {},
        metrics=metrics or [],
        inference=inference or {},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        notes=notes,
    )
    write_card(card, directory / f"{name}.json")
    return card


def write_card(card: WeightsCard, path: Path) -> None:
    atomic_write_bytes(Path(path), (json.dumps(card.to_dict(), indent=2) + "\n").encode())


def weights_dirs() -> list[Path]:
    """The folders weights are looked up in: shipped first, then exported from runs."""
    settings = get_settings()
    folders = [Path(settings.weights_dir), Path(settings.user_weights_dir)]
    return folders[:1] if folders[0].resolve() == folders[1].resolve() else folders


def resolve_weights(name_or_path: str | os.PathLike, weights_dir: Path | None = None) -> tuple[Path, Path]:
    """Find ``(safetensors_path, card_path)`` for a weights name or a path to either file.

    A name is looked up in ``weights_dir`` if given, else in :func:`weights_dirs`; ``hf://OWNER/REPO/NAME``
    is fetched from the Hugging Face Hub (:mod:`srweb.weights.hub`).
    """
    raw = str(name_or_path)
    if is_hub_ref(raw):
        try:
            return download(raw)
        except HubError as exc:
            raise WeightsError(str(exc)) from None
    candidate = Path(raw).expanduser()
    if candidate.suffix in {".safetensors", ".json"}:  # a path to one of the two files
        stem = candidate.with_suffix("")
        if (found := _weights_pair(stem)) is not None:
            return found
        raise WeightsError(f"weights {raw!r} not found: need both {stem}.safetensors and {stem}.json")
    if os.sep in raw:  # a path that is neither of the two files
        raise WeightsError(f"weights {raw!r} not found: a path must name an existing NAME.safetensors or "
                           f"NAME.json, with the other beside it")
    for folder in [weights_dir] if weights_dir else weights_dirs():
        if (found := _weights_pair(Path(folder) / raw)) is not None:
            return found
    known = ", ".join(c.name for c in list_weights(weights_dir)) or "none"
    raise WeightsError(f"weights {raw!r} not found (need {raw}.safetensors and {raw}.json); available: {known}")


def _weights_pair(stem: Path) -> tuple[Path, Path] | None:
    """``(STEM.safetensors, STEM.json)`` when both exist. Names hold a dot (ARCH-xS.TAG): with_suffix
    would replace ".TAG", so the suffixes are appended."""
    tensors, card = stem.parent / f"{stem.name}.safetensors", stem.parent / f"{stem.name}.json"
    return (tensors, card) if tensors.exists() and card.exists() else None


def read_card(path: Path) -> WeightsCard:
    try:
        return WeightsCard.from_dict(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise WeightsError(f"{path}: unreadable model card ({exc})") from None


def load_weights(name_or_path: str | os.PathLike, *, weights_dir: Path | None = None, verify: bool = True) -> tuple[nn.Module, WeightsCard]:
    """Build the model a card describes and load its tensors (in eval mode, on CPU).

    Raises:
        WeightsError: missing files, or a card that disagrees with its tensors.
    """
    tensors, card_path = resolve_weights(name_or_path, weights_dir)
    card = read_card(card_path)
    if verify and card.sha256 and file_sha256(tensors) != card.sha256:
        raise WeightsError(f"{tensors}: sha256 differs from its card (file changed or corrupt)")
    if card.imported:  # a community model, built by spandrel
        try:
            model = load_community(str(tensors), card.arch, card.scale, card.config)
        except CommunityModelError as exc:
            raise WeightsError(f"{tensors}: {exc}") from None
    else:
        model = _load_registered(card, tensors, card_path)
    if count_params(model) != card.num_params:
        raise WeightsError(f"{card_path}: card says {card.num_params} params, model has {count_params(model)}")
    model.eval()
    model.weights_name = card.name
    return model, card


def _load_registered(card: WeightsCard, tensors: Path, card_path: Path) -> nn.Module:
    """The registry model a card describes, with its tensors loaded."""
    try:
        model = create_model(card.arch, card.scale, **card.config)
    except ValueError as exc:
        raise WeightsError(f"{card_path}: card describes no buildable model ({exc})") from None
    try:
        missing, unexpected = load_model(model, str(tensors), strict=False)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise WeightsError(f"{tensors}: tensors do not fit {card.arch} x{card.scale} ({first_line(exc)})") from None
    if missing or unexpected:
        raise WeightsError(
            f"{tensors}: tensors do not fit {card.arch} x{card.scale} "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    return model


def list_weights(weights_dir: Path | None = None) -> list[WeightsCard]:
    """Cards of every checkpoint in ``weights_dir`` (default: :func:`weights_dirs`), sorted by
    architecture, scale, name; a name found twice is listed once, from the first folder."""
    cards: dict[str, WeightsCard] = {}
    for directory in [weights_dir] if weights_dir else weights_dirs():
        for card_path in sorted(Path(directory).glob("*.json")):
            if card_path.with_suffix(".safetensors").exists():
                try:
                    card = read_card(card_path)
                except WeightsError:
                    continue
                cards.setdefault(card.name, card)
    return sorted(cards.values(), key=lambda c: (c.arch, c.scale, c.name))


def weights_source(name: str) -> str:
    """``"shipped"`` for a checkpoint in the shipped folder, ``"imported"`` for a community model
    ``srweb import`` brought in, ``"exported"`` for one a run exported."""
    tensors, card = resolve_weights(name)
    if tensors.parent.resolve() == Path(get_settings().weights_dir).resolve():
        return "shipped"
    return "imported" if "imported" in (read_card(card).training or {}) else "exported"


def import_pth(path: str | os.PathLike, arch: str, scale: int, name: str, *, key: str | None = None, **config: Any) -> WeightsCard:
    """Convert a foreign PyTorch checkpoint into srweb's format without executing pickled code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for hostile or broken pickles
        raise WeightsError(f"{path}: refused to load as weights ({first_line(exc)})") from None
    if key:
        state = state[key]
    elif isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model = create_model(arch, scale, **config)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        raise WeightsError(f"{path}: tensors do not fit {arch} x{scale} ({first_line(exc)})") from None
    return save_weights(model, name, training={"imported_from": str(path)})
