"""Weights on the Hugging Face Hub: ``hf://OWNER/REPO/NAME[@REVISION]`` names a card and its tensors
in a model repository (downloaded once into the Hub cache, checked against the card's sha256 like any
weights), and ``srweb publish`` uploads shipped or exported weights there, with a model card."""

from __future__ import annotations

import argparse
from pathlib import Path

HUB_PREFIX = "hf://"


class HubError(ValueError):
    """A Hub reference that is malformed or cannot be fetched or published."""


def is_hub_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def parse_ref(ref: str) -> tuple[str, str, str | None]:
    """``hf://OWNER/REPO/NAME@REV`` -> (``OWNER/REPO``, ``NAME``, ``REV`` or None)."""
    spec, _, revision = ref[len(HUB_PREFIX):].partition("@")
    parts = [p for p in spec.split("/") if p]
    if len(parts) != 3 or not is_hub_ref(ref):
        raise HubError(f"{ref}: a Hub weights reference is hf://OWNER/REPO/NAME (optionally @REVISION)")
    return f"{parts[0]}/{parts[1]}", parts[2], revision or None


def download(ref: str) -> tuple[Path, Path]:
    """The (safetensors, card) files of a Hub reference, fetched into the Hub cache when not there yet."""
    from huggingface_hub import hf_hub_download

    repo_id, name, revision = parse_ref(ref)
    paths = []
    for suffix in (".json", ".safetensors"):
        try:
            paths.append(Path(hf_hub_download(repo_id, f"{name}{suffix}", revision=revision, library_name="srweb")))
        except Exception as exc:  # offline, no such repo or file, gated, ...: one line for the user
            raise HubError(f"{ref}: cannot fetch {name}{suffix} from {repo_id} ({_one_line(exc)})") from None
    card, tensors = paths
    return tensors, card


def fetch_into(refs: list[str] | tuple[str, ...], folder: Path) -> list[str]:
    """Copy the weights each Hub reference names into ``folder`` (the exported-weights folder), so
    they are listed like any; a reference already there with the same tensors is not copied again.
    A reference that cannot be fetched, fails its checks, or whose name is taken by other weights is
    logged and skipped. Returns the names now in ``folder``."""
    import logging
    import shutil

    from srweb.weights.files import WeightsError, list_weights, load_weights

    log = logging.getLogger(__name__)
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


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (Hub errors carry the server's whole answer)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def readme(name: str, repo_id: str, about: str) -> str:
    """The model repository's README: Hub metadata, the card in words, and how to use the weights."""
    return (f"---\nlibrary_name: srweb\ntags:\n- super-resolution\n- image-to-image\n- srweb\n---\n\n"
            f"# {name}\n\n{about}\n\n## Use\n\nWith srweb installed (the super-resolution studio that made these "
            f"weights):\n\n```bash\n"
            f"srweb upscale photo.png --weights {HUB_PREFIX}{repo_id}/{name} --out upscaled/\n```\n\n"
            f"```python\nimport srweb\nup = srweb.Upscaler(\"{HUB_PREFIX}{repo_id}/{name}\")\n```\n")


def publish(name: str, repo_id: str, *, private: bool = False, token: str | None = None, onnx: bool = False) -> str:
    """Upload weights ``name`` (shipped or exported: NAME.safetensors and NAME.json) to model repository
    ``repo_id``, created when missing; a README describing them is added when the repository has none.
    ``onnx`` adds NAME.onnx (:func:`srweb.weights.onnx.cached_export`, checked with onnxruntime).
    Returns the reference that loads them (``hf://repo_id/name``)."""
    from huggingface_hub import HfApi

    from srweb.weights.files import load_weights, resolve_weights
    from srweb.weights.table import card_markdown

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"{repo_id}: a Hub repository is OWNER/NAME")
    _, card = load_weights(name)  # the tensors match their card before anything leaves this machine
    files = list(resolve_weights(name))
    if onnx:
        from srweb.weights.onnx import cached_export

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
        raise HubError(f"cannot publish {card.name} to {repo_id} ({_one_line(exc)})") from None
    return f"{HUB_PREFIX}{repo_id}/{card.name}"


def cmd_publish(args: argparse.Namespace) -> int:
    print(publish(args.weights, args.repo, private=args.private, token=args.token, onnx=args.onnx))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="upload weights and their card to a Hugging Face Hub model repository")
    p.add_argument("weights", help="weights name (shipped or exported) or path")
    p.add_argument("--repo", required=True, help="OWNER/NAME of the model repository (created when missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--onnx", action="store_true", help="also upload NAME.onnx (see srweb onnx)")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the token `hf auth login` saved)")
    p.set_defaults(func=cmd_publish)
