"""Weights on the Hugging Face Hub: ``hf://OWNER/REPO/NAME[@REVISION]`` names a card and its tensors
in a model repository (downloaded once into the Hub cache, checked against the card's sha256 like any
weights). Uploading and copying weights is :mod:`srweb.weights.sync`."""

from __future__ import annotations

from pathlib import Path

from srweb.errors import first_line

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
    from huggingface_hub import hf_hub_download  # heavy, and only needed for hf:// weights

    repo_id, name, revision = parse_ref(ref)
    paths = []
    for suffix in (".json", ".safetensors"):
        try:
            paths.append(Path(hf_hub_download(repo_id, f"{name}{suffix}", revision=revision, library_name="srweb")))
        except Exception as exc:  # offline, no such repo or file, gated, ...: one line for the user
            raise HubError(f"{ref}: cannot fetch {name}{suffix} from {repo_id} ({first_line(exc, with_type=True)})") from None
    card, tensors = paths
    return tensors, card


def readme(name: str, repo_id: str, about: str) -> str:
    """The model repository's README: Hub metadata, the card in words, and how to use the weights."""
    return (f"---\nlibrary_name: srweb\ntags:\n- super-resolution\n- image-to-image\n- srweb\n---\n\n"
            f"# {name}\n\n{about}\n\n## Use\n\nWith srweb installed (the super-resolution studio that made these "
            f"weights):\n\n```bash\n"
            f"srweb upscale photo.png --weights {HUB_PREFIX}{repo_id}/{name} --out upscaled/\n```\n\n"
            f"```python\nimport srweb\nup = srweb.Upscaler(\"{HUB_PREFIX}{repo_id}/{name}\")\n```\n")
