"""Moving weights between this machine and the Hugging Face Hub: :func:`fetch_into` copies Hub weights
into the exported-weights folder (``SRWEB_HUB_WEIGHTS``) and :func:`publish` uploads local weights."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from srweb.errors import first_line
from srweb.weights.files import WeightsError, list_weights, load_weights, resolve_weights
from srweb.weights.hub import HUB_PREFIX, HubError, download, readme
from srweb.weights.table import card_markdown

log = logging.getLogger(__name__)


def fetch_into(refs: list[str] | tuple[str, ...], folder: Path) -> list[str]:
    """Copy the weights each Hub reference names into ``folder`` (the exported-weights folder), so
    they are listed like any; a reference already there with the same tensors is not copied again.
    A reference that cannot be fetched, fails its checks, or whose name is taken by other weights is
    logged and skipped. Returns the names now in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    known = {card.name: card.sha256 for card in list_weights()}
    fetched = []
    for ref in refs:
        try:
            tensors, card_path = download(ref)
            _, card = load_weights(str(card_path))  # sha256 and shapes checked before it is listed
        except (HubError, WeightsError) as exc:
            log.warning("SRWEB_HUB_WEIGHTS: %s", exc)
            continue
        if Path(card.name).name != card.name or card.name.startswith("."):  # it names the files written here
            log.warning("SRWEB_HUB_WEIGHTS: %s: its card's name %r is not a file name; skipped", ref, card.name)
            continue
        if known.get(card.name, card.sha256) != card.sha256:
            log.warning("SRWEB_HUB_WEIGHTS: %s: other weights are already called %s; skipped", ref, card.name)
            continue
        if card.name not in known:
            shutil.copyfile(tensors, folder / f"{card.name}.safetensors")
            shutil.copyfile(card_path, folder / f"{card.name}.json")  # last: a card is listed with its tensors
            known[card.name] = card.sha256
        fetched.append(card.name)
    return fetched


def publish(name: str, repo_id: str, *, private: bool = False, token: str | None = None, onnx: bool = False) -> str:
    """Upload weights ``name`` (shipped or exported: NAME.safetensors and NAME.json) to model repository
    ``repo_id``, created when missing; a README describing them is added when the repository has none.
    ``onnx`` adds NAME.onnx (:func:`srweb.weights.onnx.cached_export`, checked with onnxruntime).
    Returns the reference that loads them (``hf://repo_id/name``)."""
    from huggingface_hub import HfApi  # heavy, and only needed to publish


    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"{repo_id}: a Hub repository is OWNER/NAME")
    _, card = load_weights(name)  # the tensors match their card before anything leaves this machine
    files = list(resolve_weights(name))
    if onnx:
        from srweb.weights.onnx import cached_export  # torch.onnx and onnxruntime: heavy, only with --onnx

        files.append(cached_export(name))  # exported before anything is uploaded
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        for path in files:
            api.upload_file(path_or_fileobj=str(path), path_in_repo=path.name, repo_id=repo_id,
                            commit_message=f"srweb publish {card.name}")
        if not api.file_exists(repo_id, "README.md"):
            api.upload_file(path_or_fileobj=readme(card.name, repo_id, card_markdown(card)).encode(),
                            path_in_repo="README.md", repo_id=repo_id, commit_message="README from the srweb card")
    except Exception as exc:  # no token, no rights, offline: one line for the user
        raise HubError(f"cannot publish {card.name} to {repo_id} ({first_line(exc, with_type=True)})") from None
    return f"{HUB_PREFIX}{repo_id}/{card.name}"
