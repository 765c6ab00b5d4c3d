"""Image I/O and colour conversion: PIL <-> tensor, RGB <-> YCbCr (BT.601 as MATLAB's rgb2ycbcr).

Every image entering srweb goes through :func:`load_image`, which turns every way a file
can be bad into one :class:`ImageError` with a message naming the file. PIL has no mode for
16-bit-per-channel colour (it keeps the high byte only), so :func:`load_pixels` hands such
PNG/TIFF files over as ``uint16`` arrays, read with OpenCV; :func:`encode_png` writes them back
(with the file's colour profile, from :func:`icc_profile_of`).
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from srweb.config import get_settings

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}

# MATLAB rgb2ycbcr on [0,1] input: offsets and matrix (rows Y, Cb, Cr), output in [0,255].
_YCBCR_OFFSET = torch.tensor([16.0, 128.0, 128.0])
_YCBCR_MATRIX = torch.tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and the reason."""


class ImageTooLarge(ImageError):
    """The header declares more pixels than allowed (refused before decoding)."""


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "uploaded image"


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has an image suffix srweb reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_image(source: str | os.PathLike | BinaryIO | Image.Image, *, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image, with EXIF orientation applied.

    Args:
        source: a path, a binary file object, or an already opened PIL image.
        max_pixels: refuse images whose header declares more pixels (decompression bombs).

    Raises:
        ImageError: missing, empty, not an image, truncated, zero-size or too large
            (:class:`ImageTooLarge`, from the header, before anything is decoded).
    """
    name = _describe(source)
    img = _open(source, name, max_pixels)
    try:
        img.load()
    except Exception as exc:  # truncated data, or a decoder's error on corrupt data
        if isinstance(source, (str, os.PathLike)):
            img.close()  # the file srweb opened would stay open
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None
    return upright(img)


def image_size(source: str | os.PathLike | BinaryIO, *, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) as the header declares it (as stored: before EXIF orientation), nothing
    decoded; every file :func:`load_image` refuses from its header is refused here with the same
    :class:`ImageError` (a truncated file passes: only decoding finds it out)."""
    img = _open(source, _describe(source), max_pixels)
    if isinstance(source, (str, os.PathLike)):
        img.close()
    return img.size


def _open(source: str | os.PathLike | BinaryIO | Image.Image, name: str, max_pixels: int | None) -> Image.Image:
    """The opened (not decoded) image, or the :class:`ImageError` its file deserves."""
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.exists():
                raise ImageError(f"{name}: file not found")
            if path.is_dir():
                raise ImageError(f"{name}: is a directory, not an image")
            if path.stat().st_size == 0:
                raise ImageError(f"{name}: empty file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Pillow's own bomb limit refused the header: name srweb's limit when the caller has one.
            raise _bomb(name, exc, max_pixels) from None
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not a readable image file") from None
        except OSError as exc:
            raise ImageError(f"{name}: cannot open image ({exc})") from None
        except Exception as exc:  # a plugin's parser on a malformed header (ValueError, SyntaxError, ...)
            raise ImageError(f"{name}: not a readable image file ({exc})") from None
    width, height = img.size
    try:
        if width == 0 or height == 0:
            raise ImageError(f"{name}: image has zero size ({width}x{height})")
        if max_pixels is not None and width * height > max_pixels:
            raise ImageTooLarge(
                f"{name}: {width}x{height} = {width * height:,} pixels exceeds the limit of {_limit(max_pixels)}"
            )
    except ImageError:
        if isinstance(source, (str, os.PathLike)):
            img.close()
        raise
    return img


def _limit(max_pixels: int) -> str:
    """``16,000,000``, with the setting that sets it when it is srweb's input limit."""
    setting = " (SRWEB_MAX_INPUT_PIXELS)" if max_pixels == get_settings().max_input_pixels else ""
    return f"{max_pixels:,}{setting}"


def _bomb(name: str, exc: Exception, max_pixels: int | None) -> ImageTooLarge:
    """The message for a header Pillow refuses as a decompression bomb, worded like every other
    "too large": the declared pixels against srweb's limit (``max_pixels``) when there is one, else
    against the most srweb decodes at all (Pillow's ``MAX_IMAGE_PIXELS``)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow: "Image size (N pixels) exceeds limit ..."
    declared = f"{int(found.group(1)):,} pixels" if found else "more pixels than allowed"
    if max_pixels is not None and max_pixels <= (Image.MAX_IMAGE_PIXELS or max_pixels):
        limit = _limit(max_pixels)
    else:
        limit = f"{Image.MAX_IMAGE_PIXELS:,} (the most srweb decodes)"
    return ImageTooLarge(
        f"{name}: too large, its header declares a decompression bomb: {declared} exceeds the limit of {limit}"
    )


def load_pixels(
    source: str | os.PathLike | BinaryIO | Image.Image, *, max_pixels: int | None = None
) -> Image.Image | np.ndarray:
    """:func:`load_image`, except that a 16-bit-per-channel RGB, RGBA or grey+alpha file (PNG, TIFF)
    comes as an (H, W, 3|4|2) ``uint16`` array in RGB(A) or grey+alpha order, EXIF orientation applied,
    with all its bits (Pillow keeps only the high byte of each)."""
    img = load_image(source, max_pixels=max_pixels)
    if img.mode not in {"RGB", "RGBA"} or not isinstance(source, (str, os.PathLike)):
        return img
    deep = read_deep_colour(source)
    return img if deep is None else deep


def read_deep_colour(path: str | os.PathLike) -> np.ndarray | None:
    """The pixels of a 16-bit-per-channel RGB(A) or grey+alpha file as an (H, W, 3|4|2) ``uint16``
    array, upright; None for any other file (one PIL reads whole; Pillow opens grey+alpha as RGBA)."""
    name = _describe(path)
    try:
        with Image.open(path) as img:
            args = img.tile[0].args if img.tile else None
            orientation = img.getexif().get(0x0112, 1)
            mode = img.mode
    except Exception:
        return None
    rawmode = args[0] if isinstance(args, tuple) else args
    if mode not in {"RGB", "RGBA"} or not isinstance(rawmode, str) or ";16" not in rawmode:
        return None
    import cv2  # OpenCV is heavy; only 16-bit and deep-colour files need it

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"{name}: cannot decode its 16-bit colour pixels")
    if rawmode.startswith("LA"):  # OpenCV spreads the grey over B, G and R
        arr = arr[..., [0, 3]]
    else:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if arr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return np.ascontiguousarray(_ORIENT.get(orientation, lambda a: a)(arr))


# EXIF orientation -> the turn that makes an (H, W, C) array upright (as ImageOps.exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def encode_png(img: Image.Image | np.ndarray, icc_profile: bytes | None = None) -> bytes:
    """PNG bytes of a PIL image (see :func:`png_ready`; its own colour profile kept) or of an
    (H, W[, 1|2|3|4]) uint8/uint16 array in grey, grey+alpha or RGB(A) order (16-bit stays 16-bit;
    grey+alpha is written as RGBA with equal colour channels, as OpenCV writes no 2-channel PNG), with
    ``icc_profile`` embedded when given (see :func:`icc_profile_of`)."""
    if isinstance(img, Image.Image):
        return image_to_bytes(png_ready(img))
    import cv2  # OpenCV is heavy; only 16-bit and deep-colour files need it

    if img.ndim == 3 and img.shape[2] == 2:
        img = img[..., [0, 0, 0, 1]]

    arr = (
        img
        if img.ndim == 2 or img.shape[2] == 1
        else cv2.cvtColor(img, cv2.COLOR_RGB2BGR if img.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    )
    ok, data = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise ValueError(f"cannot encode a {img.dtype} array of shape {img.shape} as PNG")
    return _with_icc_profile(data.tobytes(), icc_profile) if icc_profile else data.tobytes()


def icc_profile_of(path: str | os.PathLike) -> bytes | None:
    """The ICC colour profile embedded in an image file; None when it has none or cannot be read."""
    try:
        with Image.open(path) as img:
            return img.info.get("icc_profile") or None
    except Exception:
        return None


def _with_icc_profile(png: bytes, profile: bytes) -> bytes:
    """PNG bytes with an iCCP chunk (the colour profile, zlib-compressed) right after IHDR, where the
    PNG specification puts it (OpenCV writes no profile of its own)."""
    body = b"ICC profile\x00\x00" + zlib.compress(profile)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    end_of_ihdr = 8 + 4 + 4 + 13 + 4  # signature, then IHDR's length, type, 13 data bytes and CRC
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says; unchanged when its EXIF block is corrupt
    (the pixels are fine, only the orientation is unknown)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # Pillow's EXIF parser raises SyntaxError, ValueError, struct.error, ...
        return img


def image_to_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    """Encode an image (PNG by default) to bytes."""
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def to_pil8(img: Image.Image | np.ndarray) -> Image.Image:
    """An image array (see :func:`load_pixels`) as an 8-bit L, RGB or RGBA image, for display and
    metrics; a PIL image unchanged."""
    if isinstance(img, Image.Image):
        return img
    planes = img.reshape(*img.shape[:2], -1).astype(np.float64)
    u8 = np.clip(planes / np.iinfo(img.dtype).max * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(u8[..., 0] if u8.shape[2] == 1 else u8)


def to_rgb8(img: Image.Image | np.ndarray) -> Image.Image:
    """Any mode, or an image array -> 8-bit RGB (16-bit scaled down, alpha dropped, CMYK/P converted)."""
    img = to_pil8(img)
    if img.mode == "RGB":
        return img
    if img.mode in {"I;16", "I;16B", "I;16L", "I"}:
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":  # [0, 1] floats, or [0, 255] ones (as srweb.inference.upscaler reads them)
        arr = np.asarray(img, dtype=np.float64)
        scale = 1.0 if arr.max() > 1.0 else 255.0
        return Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    return img.convert("RGB")


# Modes PIL writes as PNG without conversion (I;16 and I are stored as 16-bit grey).
PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "P", "RGB", "RGBA"})


def png_ready(img: Image.Image) -> Image.Image:
    """``img`` in a mode PNG can store: unchanged when it can, else 8-bit RGB (CMYK, YCbCr, LAB,
    HSV, float, ...), so that saving an upscaled CMYK JPEG as PNG does not fail."""
    if img.mode in PNG_MODES:
        return img
    converted = to_rgb8(img)
    converted.info.pop("icc_profile", None)  # a CMYK/LAB profile does not describe the RGB pixels
    return converted


def rgb_to_ycbcr(t: torch.Tensor) -> torch.Tensor:
    """RGB (..., 3, H, W) in [0, 1] -> YCbCr in [0, 1] exactly as MATLAB's ``rgb2ycbcr`` / 255."""
    m = _YCBCR_MATRIX.to(t.device, t.dtype)
    off = _YCBCR_OFFSET.to(t.device, t.dtype)
    out = torch.einsum("ij,...jhw->...ihw", m, t) + off[:, None, None]
    return out / 255.0


def ycbcr_to_rgb(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (not clamped)."""
    m_inv = torch.linalg.inv(_YCBCR_MATRIX.double()).to(t.device, t.dtype)
    off = _YCBCR_OFFSET.to(t.device, t.dtype)
    return torch.einsum("ij,...jhw->...ihw", m_inv, t * 255.0 - off[:, None, None])


def rgb_to_y(t: torch.Tensor) -> torch.Tensor:
    """RGB (..., 3, H, W) in [0, 1] -> Y (..., 1, H, W) in [0, 1]: (16 + 65.481 R + 128.553 G + 24.966 B) / 255."""
    w = _YCBCR_MATRIX[0].to(t.device, t.dtype)
    y = torch.einsum("j,...jhw->...hw", w, t) + 16.0
    return (y / 255.0).unsqueeze(-3)


def rgb_to_y_np(a: np.ndarray) -> np.ndarray:
    """RGB HxWx3 in [0, 255] -> Y HxW float64 in [0, 255] (MATLAB ``rgb2ycbcr`` Y channel)."""
    a = np.asarray(a, dtype=np.float64) / 255.0
    return 16.0 + a @ _YCBCR_MATRIX[0].double().numpy()
