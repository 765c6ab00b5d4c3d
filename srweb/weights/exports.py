"""Publish a finished run's exported weights into the user weights folder (so Upscale lists them)."""

from __future__ import annotations

from pathlib import Path

from srweb.config import get_settings
from srweb.imaging.fileio import atomic_copy
from srweb.track.db import session_scope, write_transaction
from srweb.track.evals import seed_from_cards
from srweb.track.runs import get_run, latest_checkpoint
from srweb.weights.files import (WeightsCard, WeightsError, file_sha256, list_weights, read_card, weights_dirs,
                                 write_card)
from srweb.weights.names import NAME_PATTERN


class ExportError(ValueError):
    """A run whose weights cannot be exported (not finished, files missing or altered)."""


def unique_weights_name(base: str, folders: list[Path], run_id: int) -> str:
    """``base`` if free in every folder, else ``base-run<id>``, then ``-run<id>-2``, ``-3``, ..."""
    def taken(name: str) -> bool:
        return any((Path(folder) / f"{name}{ext}").exists() for folder in folders for ext in (".safetensors", ".json"))

    if not taken(base):
        return base
    candidate = f"{base}-run{run_id}"
    n = 2
    while taken(candidate):
        candidate, n = f"{base}-run{run_id}-{n}", n + 1
    return candidate


def export_run_weights(run_id: int, *, weights_dir: Path | None = None, url: str | None = None) -> WeightsCard:
    """Copy ``run_dir/export/NAME.safetensors`` + ``NAME.json`` of a finished run into the user
    weights folder (``Settings.user_weights_dir`` unless ``weights_dir`` is given).

    The copy gets a name no shipped or exported weights use yet (see :func:`unique_weights_name`); its card is
    rewritten with that name and the run id, and its metrics are seeded into the leaderboard. A run
    exported before is not copied again: its entry is returned.
    The tensors are written before the card, so a half-done export is never listed.

    Raises:
        ExportError: no such run, not finished, export files missing, or tensors that differ from their card.
    """
    with session_scope(url, write=False) as session:
        run = get_run(session, int(run_id))
        if run is None:
            raise ExportError(f"no run with id {run_id}")
        status, name, run_dir = run.status, run.weights_name, run.run_dir
        exported = latest_checkpoint(session, run.id, "export")  # where `srweb train --export` put them
    if status != "finished":
        raise ExportError(f"run {run_id} is {status}; only finished runs have weights to export")
    if not name or not run_dir:
        raise ExportError(f"run {run_id} finished without exported weights")
    from srweb.artifacts import local_copy  # a run trained by a `srweb worker` keeps its folder in the store

    export_dir = local_copy(exported.path.rsplit("/", 1)[0] if exported is not None else f"{run_dir}/export")
    tensors, card_path = export_dir / f"{name}.safetensors", export_dir / f"{name}.json"
    if not tensors.is_file() or not card_path.is_file():
        raise ExportError(f"run {run_id}: {tensors.name} or {card_path.name} is missing in {tensors.parent}")
    try:
        card = read_card(card_path)
    except WeightsError as exc:
        raise ExportError(str(exc)) from None
    if card.sha256 and file_sha256(tensors) != card.sha256:
        raise ExportError(f"run {run_id}: {tensors.name} differs from its card (changed or corrupt)")

    target_dir = Path(weights_dir or get_settings().user_weights_dir)
    folders = [target_dir, *weights_dirs()]
    for folder in folders:  # exported before (or the same tensors shipped): that entry, not a copy
        for existing in list_weights(folder) if folder.is_dir() else []:
            if card.sha256 and existing.sha256 == card.sha256 and existing.training.get("run_id") == int(run_id):
                return existing
    new_name = unique_weights_name(name, folders, int(run_id))
    if not NAME_PATTERN.match(new_name):
        raise ExportError(f"run {run_id}: {new_name!r} is not a valid weights name (ARCH-xS.TAG)")
    card.name = new_name
    card.training = {**card.training, "run_id": int(run_id), "exported_from": str(tensors)}
    copied = target_dir / f"{new_name}.safetensors"
    try:
        atomic_copy(tensors, copied)
        write_card(card, target_dir / f"{new_name}.json")
    except OSError as exc:  # unwritable, full, or not a folder (SRWEB_USER_WEIGHTS_DIR); the run keeps its files
        if copied.is_file():  # the card failed after the tensors: an export is both or nothing
            copied.unlink()
        raise ExportError(f"run {run_id}: cannot write to the weights folder {target_dir} "
                          f"({exc.strerror or exc})") from None
    write_transaction(lambda s: seed_from_cards(s, [card.to_dict()]), url=url)
    return card
