"""Verified, resumable downloads and atomic extraction: the one downloader behind DIV2K and
``srweb data fetch`` (:mod:`srweb.data.catalog` says what to fetch).

A download goes to ``DEST.part`` and is renamed to ``DEST`` only once verified (size and SHA-256
when the catalogue pins them, else the archive's own integrity); a rerun resumes the ``.part``
with an HTTP Range request. Extraction goes to a temporary folder beside the target and the
dataset folder appears with one rename, so a crash never leaves a half-filled dataset behind.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import tarfile
import tempfile
import zipfile
import zlib  # gzip decompression errors surface as zlib.error
from collections.abc import Sequence
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm.auto import tqdm

from srweb.config import get_settings
from srweb.data.catalog import CATALOG, Archive, find_entry
from srweb.imaging.io import is_image_file

USER_AGENT = "srweb-data-fetch"


class DownloadError(OSError):
    """A download or archive that failed; the message says what to do."""


def fetch(
    url: str,
    dest: Path,
    size: int | None = None,
    sha256: str | None = None,
    *,
    timeout: float = 60,
    progress: bool = True,
    manual: str | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an interrupted run.

    The file is verified (size and SHA-256 when known, else archive integrity) before it is
    renamed into place, so ``dest`` exists only when complete. ``manual`` is the way round a
    failed download that the error names (default: put the file at ``dest`` by hand).

    Raises:
        DownloadError: offline/HTTP failure or verification failure (a corrupt file is removed).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():  # left by a run that stopped before extracting
        _verify(dest, size, sha256, url)
        return dest
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    if not (size is not None and start == size):
        manual = manual or f"download it by hand and put it at {dest}"
        _download(url, part, start, size, manual, timeout=timeout, progress=progress)
    _verify(part, size, sha256, url)
    os.replace(part, dest)
    return dest


def _download(
    url: str, part: Path, start: int, size: int | None, manual: str, *, timeout: float, progress: bool
) -> None:
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={start}-"} if start else {})}
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to send: the part is already whole
            return
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; {manual}") from None
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url} ({reason}); are you offline? {manual[:1].upper()}{manual[1:]}"
        ) from None
    with response:
        if start and getattr(response, "status", 200) != 206:
            start = 0  # the server ignored the range: start over
        total = size or (start + int(response.headers.get("Content-Length") or 0)) or None
        expected = int(response.headers.get("Content-Length") or 0)
        received = 0
        with (
            open(part, "ab" if start else "wb") as f,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            try:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"download of {url} cut after {start + received} bytes ({exc}); run again to resume"
                ) from None
        if expected and received < expected:
            raise DownloadError(
                f"download of {url} cut after {start + received} of {start + expected} bytes; run again to resume"
            )


def _verify(path: Path, size: int | None, sha256: str | None, url: str) -> None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        if actual > size:
            path.unlink()
        raise DownloadError(f"{url}: got {actual} bytes, expected {size}; run again to resume")
    if sha256 is not None:
        if file_sha256(path) != sha256:
            path.unlink()
            raise DownloadError(f"{url}: SHA-256 mismatch, corrupt download removed; run again")
        return
    problem = archive_problem(path)
    if problem:
        path.unlink()
        raise DownloadError(f"{url}: {problem}, download removed; run again")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def archive_problem(path: Path) -> str | None:
    """What is wrong with the zip or tar archive at ``path`` (read through), or None when it reads whole."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            return f"corrupt zip archive ({exc})"
        return f"archive member {bad} is corrupt" if bad is not None else None
    with open(path, "rb") as f:
        magic = f.read(2)
    try:
        if magic == b"\x1f\x8b":  # gzip: read it through, its CRC is checked at the end
            with gzip.open(path) as stream:
                while stream.read(1 << 22):
                    pass
        with tarfile.open(path) as tf:  # a damaged header mid-way ends the listing early: images counts
            for member in tf:
                if member.isfile():
                    with tf.extractfile(member) as f:
                        while f.read(1 << 20):
                            pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        return f"not a readable zip or tar archive ({exc})"
    return None


def extract(archive: Path, dst: Path, member: str | None = None, *, images: int | None = None) -> Path:
    """Extract ``archive`` into a temporary folder beside ``dst``, then rename its ``member`` folder
    (when absent or None: the one folder holding images) to ``dst``.

    ``images``, when given, is the number of image files that folder must hold. A crash or a
    refusal mid-way leaves no half-filled dataset folder behind.

    Raises:
        DownloadError: corrupt archive, no such folder, or the wrong number of images.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".extract-") as tmp:
        _unpack(archive, Path(tmp))
        src = _image_folder(Path(tmp), member, archive)
        found = sum(1 for p in src.iterdir() if p.is_file() and is_image_file(p))
        if images is not None and found != images:
            raise DownloadError(
                f"{archive.name}: {found} images in {src.relative_to(tmp).as_posix()}/, expected {images}; refused"
            )
        if dst.is_dir() and not any(dst.iterdir()):
            dst.rmdir()
        os.replace(src, dst)
    return dst


def install(archives: Sequence[Archive], folder: Path, downloads: Path, *, progress: bool = True) -> list[Path]:
    """Fetch, verify and extract each archive into its folder under ``folder`` (the dataset's).

    Archives are downloaded into ``downloads`` (kept there while incomplete, so a rerun resumes)
    and deleted once extracted or refused; a folder that already holds files is left alone.
    Returns the folders filled by this call.

    Raises:
        DownloadError: offline, HTTP error, or an archive refused (nothing of it is left behind).
    """
    filled = []
    try:
        for archive in archives:
            dst = folder / archive.target if archive.target else folder
            if dst.is_dir() and any(not p.name.startswith(".") for p in dst.iterdir()):
                continue
            member = archive.member or archive.target or None
            manual = (
                f"download it by hand and unpack {f'its {member} folder' if member else 'its images'} into "
                f"{dst}, or put the archive at {downloads / archive.file} and run again"
            )
            path = fetch(
                archive.url, downloads / archive.file, archive.size, archive.sha256, progress=progress, manual=manual
            )
            try:
                extract(path, dst, member, images=archive.images)
            finally:
                path.unlink(missing_ok=True)
            filled.append(dst)
    finally:
        with contextlib.suppress(OSError):
            downloads.rmdir()  # only when empty: a partial download stays to be resumed
    return filled


def _unpack(archive: Path, into: Path) -> None:
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(into)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(into, filter="data")  # refuses absolute paths, links out, devices
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise DownloadError(f"{archive.name}: corrupt archive ({exc}); refused") from None


def _image_folder(tmp: Path, member: str | None, archive: Path) -> Path:
    if member and (tmp / member).is_dir():
        return tmp / member
    holders = sorted({p.parent for p in tmp.rglob("*") if p.is_file() and is_image_file(p)})
    if len(holders) == 1:
        return holders[0]
    wanted = f"{member}/" if member else "one folder of images"
    raise DownloadError(
        f"{archive.name}: does not contain {wanted}"
        + (f" (images in {len(holders)} folders)" if holders else " (no images)")
        + "; refused"
    )


def fetch_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    splits: Sequence[str] | None = None,
    scales: Sequence[int] = (),
    track: str = "bicubic",
    progress: bool = True,
) -> Path:
    """Download catalogue dataset ``name`` into ``root/NAME`` (default root: ``settings.data_root``).

    ``splits`` and ``scales`` pick DIV2K's parts: the HR images of each split (default: all),
    plus the bicubic LR images of each of ``scales``. Returns the dataset's folder.

    Raises:
        ValueError: unknown name, split or scale.
        DownloadError: offline, HTTP error, or a refused archive (the message says what to do).
    """
    entry = find_entry(name)
    if entry is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(CATALOG)}")
    bad_split = [s for s in splits or () if s not in entry.splits]
    bad_scale = [s for s in scales if s not in entry.scales]
    if bad_split or bad_scale:
        offered = (
            f"splits {', '.join(entry.splits)}; scales {', '.join(map(str, entry.scales))}"
            if entry.splits
            else "no parts"
        )
        raise ValueError(f"{entry.name} has {offered} (got {', '.join(map(str, bad_split + bad_scale))})")
    root = Path(root).expanduser() if root else get_settings().data_root
    folder = root / entry.name
    install(
        entry.select(tuple(splits) if splits else None, tuple(scales), track),
        folder,
        root / ".downloads",
        progress=progress,
    )
    return folder
