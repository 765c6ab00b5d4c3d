"""``srweb data list`` (the known datasets and where each is) and ``srweb data fetch NAME``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from srweb.config import get_settings
from srweb.data.catalog import CATALOG, Entry
from srweb.data.samples import builtin_datasets, locate_dataset


def _size(num: int | None) -> str:
    if num is None:
        return "size not published"
    return f"{num / 1e9:.1f} GB" if num >= 1e9 else f"{num / 1e6:.0f} MB"


def _parts_present(entry: Entry, folder: Path) -> list[str]:
    """DIV2K's parts found in ``folder`` ("valid HR", "train x2", ...); [] for single-archive sets."""
    if len(entry.archives) == 1:
        return []
    return [
        f"{a.split} {'HR' if a.scale is None else f'x{a.scale}' + ('' if a.track == 'bicubic' else ' ' + a.track)}"
        for a in entry.archives
        if (folder / a.target).is_dir() and any((folder / a.target).iterdir())
    ]


def _default_size(entry: Entry) -> int | None:
    """Bytes that ``srweb data fetch NAME`` downloads with no options (DIV2K: both splits' HR)."""
    archives = entry.select()
    return None if any(a.size is None for a in archives) else sum(a.size for a in archives)


def dataset_rows(root: Path | None = None) -> list[dict]:
    """One row per dataset srweb knows: the sample set, the built-in ones, the catalogue, and any
    other folder under the data root; each says where it is (built in / downloaded / missing)."""
    root = root or get_settings().data_root
    builtin = builtin_datasets()
    rows = [
        {
            "name": "sample",
            "status": "built in",
            "path": str(get_settings().cache_dir / "samples"),
            "summary": "photos shipped with scikit-image, copied here on first use",
            "source": "scikit-image",
        }
    ]
    for name, path in builtin.items():
        found = locate_dataset(name, root)
        status = "built in" if found == path else "downloaded"
        note = "" if found == path else f" (used instead of the built-in copy at {path})"
        rows.append(
            {
                "name": name,
                "status": status,
                "path": str(found),
                "summary": _builtin_summary(path) + note,
                "source": "package data",
            }
        )
    for entry in CATALOG.values():
        found = locate_dataset(entry.name, root)
        row = {
            "name": entry.name,
            "status": "downloaded" if found else "missing",
            "path": str(found or root / entry.name),
            "summary": entry.summary,
            "source": entry.homepage,
            "pinned": entry.pinned,
            "size_bytes": _default_size(entry),
        }
        if found and len(entry.archives) > 1:
            row["parts"] = _parts_present(entry, found)
        rows.append(row)
    known = {r["name"].lower() for r in rows}
    if root.is_dir():
        own = [
            p
            for p in sorted(root.iterdir())
            if p.is_dir() and not p.name.startswith(".") and p.name.lower() not in known
        ]
        rows += [
            {"name": p.name, "status": "downloaded", "path": str(p), "summary": "your folder", "source": "-"}
            for p in own
        ]
    return rows


def _builtin_summary(folder: Path) -> str:
    # srweb.imaging imports torch: only when a built-in set is listed
    from srweb.imaging.io import is_image_file

    count = sum(1 for p in folder.iterdir() if is_image_file(p))
    return f"{count} HR test images shipped with srweb (provenance: {folder.parent / 'README.md'})"


def cmd_list(args: argparse.Namespace) -> int:
    root = Path(args.root).expanduser() if args.root else None
    rows = dataset_rows(root)
    if args.json:
        print(json.dumps({"data_root": str(root or get_settings().data_root), "datasets": rows}, indent=2))
        return 0
    print(f"data root: {root or get_settings().data_root} (SRWEB_DATA_ROOT)")
    width = max(len(r["name"]) for r in rows) + 2
    for row in rows:
        if row["status"] == "missing":
            pinned = "sha256 pinned" if row["pinned"] else "sha256 not pinned"
            where = f"missing: srweb data fetch {row['name']} ({_size(row['size_bytes'])}, {pinned})"
        else:
            parts = f" [{', '.join(row['parts'])}]" if row.get("parts") else ""
            where = f"{row['status']} at {row['path']}{parts}"
        print(f"{row['name']:<{width}}{where}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from srweb.data.download import DownloadError, fetch_dataset

    try:
        folder = fetch_dataset(
            args.name, args.root, splits=args.split, scales=tuple(args.scale or ()), progress=not args.quiet
        )
    except DownloadError as exc:
        print(f"srweb: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: ready at {folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="datasets: list what is known and where (data list), download one (data fetch)")
    data = p.add_subparsers(dest="data_command", required=True)
    q = data.add_parser("list", help="the known datasets and where each is (built in / downloaded / missing)")
    q.add_argument("--root", help="data root to look in (default: SRWEB_DATA_ROOT, else data/ under the state dir)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = data.add_parser(
        "fetch",
        help="download, verify and unpack a dataset into the data root (resumable)",
        description="Downloads are resumed when run again; a dataset folder appears only once "
        "its archive is verified and unpacked.",
    )
    q.add_argument("name", help=f"one of {', '.join(CATALOG)}")
    q.add_argument("--root", help="data root to fill (default: SRWEB_DATA_ROOT, else data/ under the state dir)")
    q.add_argument(
        "--split", nargs="+", choices=["train", "valid"], help="DIV2K: which splits' HR images (default: both)"
    )
    q.add_argument(
        "--scale", type=int, nargs="+", choices=[2, 3, 4], help="DIV2K: also the bicubic LR images of these scales"
    )
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_fetch)
