"""Datasets: HR folders, DIV2K layout (generation, cache, mocked download), prepare, PatchPairs."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from srweb.config import get_settings
from srweb.data import catalog
from srweb.data import download as download_mod
from srweb.data.div2k import DIV2K, DownloadError
from conftest import forged_png
from srweb.data.folders import HRFolderDataset, SkippedImage, make_lr, read_rgb8
from srweb.data.pairs import FSRCNN_SCALES, PatchPairs
from srweb.data.prepare import prepare_dataset
from srweb.data.samples import benchmark_path, sample_images_dir
from srweb.imaging.resize import imresize, imresize_np


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SRWEB_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    yield tmp_path / "cache"
    get_settings.cache_clear()


def rand_rgb(h: int, w: int, seed: int = 0, lo: int = 0, hi: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, (h, w, 3), dtype=np.uint8)


def save(img: np.ndarray | Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (img if isinstance(img, Image.Image) else Image.fromarray(img)).save(path)
    return path


# --------------------------------------------------------------------------- HR folders


def test_hr_folder_items_and_odd_inputs(tmp_path: Path) -> None:
    root = tmp_path / "set"
    save(rand_rgb(25, 31), root / "a.png")
    save(Image.fromarray(rand_rgb(20, 20, 1)[..., 0]), root / "b_gray.png")
    save(Image.fromarray((np.arange(24 * 18, dtype=np.uint16).reshape(24, 18) * 150)), root / "c_16bit.png")
    save(Image.fromarray(np.dstack([rand_rgb(18, 22, 2), np.full((18, 22), 7, np.uint8)])), root / "d_rgba.png")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.warns(UserWarning) as record:
        ds = HRFolderDataset(root, scale=3)
    messages = " ".join(str(w.message) for w in record)
    assert "notes.txt" in messages and "broken.png" in messages
    assert [Path(p).name for p in ds.files] == ["a.png", "b_gray.png", "c_16bit.png", "d_rgba.png"]
    assert Image.open(root / "c_16bit.png").mode.startswith("I")
    for item in ds:
        lr, hr = item["lr"], item["hr"]
        assert lr.dtype == hr.dtype == torch.float32
        assert hr.shape[0] == 3 and hr.shape[1] % 3 == 0 and hr.shape[2] % 3 == 0
        assert lr.shape == (3, hr.shape[1] // 3, hr.shape[2] // 3)
        assert 0 <= float(lr.min()) and float(hr.max()) <= 1
        assert item["hr_path"].endswith(".png")
    first = ds[0]
    assert first["hr"].shape == (3, 24, 30)
    hr8 = (first["hr"] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal((first["lr"] * 255).round().byte().permute(1, 2, 0).numpy(), imresize_np(hr8, 1 / 3))
    with pytest.warns(UserWarning):
        y = HRFolderDataset(root, scale=2, channels="y", pre_upsample=True)[0]
    assert y["lr"].shape == y["hr"].shape == (1, 24, 30)
    assert 16 / 255 - 1e-6 <= float(y["hr"].min()) and float(y["hr"].max()) <= 235 / 255 + 1e-6


def test_hr_folder_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope"):
        HRFolderDataset(tmp_path / "nope", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        HRFolderDataset(tmp_path / "empty", 2)
    with pytest.raises(ValueError, match="channels"):
        save(rand_rgb(8, 8), tmp_path / "one" / "x.png")
        HRFolderDataset(tmp_path / "one", 2, channels="bgr")


# --------------------------------------------------------------------------- DIV2K


def build_div2k(root: Path, n: int = 3, split: str = "train", first: int = 1) -> list[np.ndarray]:
    images = []
    for i in range(n):
        hr = rand_rgb(36 + 12 * i, 48, seed=i)
        name = f"{first + i:04d}"
        save(hr, root / f"DIV2K_{split}_HR" / f"{name}.png")
        save(make_lr(hr, 2), root / f"DIV2K_{split}_LR_bicubic" / "X2" / f"{name}x2.png")
        images.append(hr)
    # x4: one LR file present, the rest to be generated; x3: folder missing altogether.
    save(make_lr(images[0], 4), root / f"DIV2K_{split}_LR_bicubic" / "X4" / f"{first:04d}x4.png")
    return images


def test_div2k_layout_generation_and_cache(tmp_path: Path) -> None:
    root = tmp_path / "DIV2K"
    images = build_div2k(root)
    for scale in (2, 3, 4):
        ds = DIV2K(tmp_path, scale, progress=False)  # parent with a DIV2K child resolves too
        assert len(ds) == 3
        for i, item in enumerate(ds):
            h, w = images[i].shape[:2]
            assert item["hr"].shape == (3, h // scale * scale, w // scale * scale)
            assert item["lr"].shape == (3, h // scale, w // scale)
            assert Path(item["lr_path"]) == root / "DIV2K_train_LR_bicubic" / f"X{scale}" / f"{i + 1:04d}x{scale}.png"
        lr0 = np.asarray(Image.open(ds.pairs[0][1]))
        assert np.array_equal(lr0, make_lr(images[0][: 36 // scale * scale], scale))
    generated = root / "DIV2K_train_LR_bicubic" / "X3" / "0002x3.png"
    mtime = generated.stat().st_mtime_ns
    DIV2K(root, 3, progress=False)
    assert generated.stat().st_mtime_ns == mtime  # cached, not regenerated
    y = DIV2K(root, 2, channels="y", pre_upsample=True, progress=False)[1]
    assert y["lr"].shape == y["hr"].shape == (1, 48, 48)


def test_div2k_read_only_root_uses_cache(tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ro"
    build_div2k(root, n=2)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: not str(p).startswith(str(root)) and real_access(p, mode))
    ds = DIV2K(root, 3, progress=False)
    assert all(str(lr).startswith(str(isolated_cache / "DIV2K")) for _, lr in ds.pairs)
    assert ds[1]["lr"].shape == (3, 16, 16)
    assert not (root / "DIV2K_train_LR_bicubic" / "X3" / "0001x3.png").exists()


def test_div2k_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="download=True"):
        DIV2K(tmp_path / "none", 2)
    build_div2k(tmp_path / "d", n=1)
    with pytest.raises(ValueError, match="unknown"):
        DIV2K(tmp_path / "d", 2, track="unknown")
    with pytest.raises(ValueError, match="split"):
        DIV2K(tmp_path / "d", 2, split="test")


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, status: int):
        super().__init__(data)
        self.status = status
        self.headers = {"Content-Length": str(len(data))}


def zip_bytes(files: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, img in files.items():
            png = io.BytesIO()
            Image.fromarray(img).save(png, format="PNG")
            zf.writestr(name, png.getvalue())
    return buf.getvalue()


def pin_archives(monkeypatch: pytest.MonkeyPatch, name: str, pins: dict[str, tuple[int, str]]) -> None:
    """Pin the catalogue's ``name`` archives listed in ``pins`` to the test's (size, sha256); they
    hold one image each."""
    entry = catalog.CATALOG[name]
    archives = tuple(
        dataclasses.replace(a, size=pins[a.file][0], sha256=pins[a.file][1], images=1) if a.file in pins else a
        for a in entry.archives
    )
    monkeypatch.setitem(catalog.CATALOG, name, dataclasses.replace(entry, archives=archives))


def test_div2k_download_resume_verify_extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hr = rand_rgb(24, 24)
    server = {
        "DIV2K_valid_HR.zip": zip_bytes({"DIV2K_valid_HR/0801.png": hr}),
        "DIV2K_valid_LR_bicubic_X2.zip": zip_bytes({"DIV2K_valid_LR_bicubic/X2/0801x2.png": make_lr(hr, 2)}),
    }
    pin_archives(monkeypatch, "DIV2K", {k: (len(v), hashlib.sha256(v).hexdigest()) for k, v in server.items()})
    requests = []

    def fake_urlopen(request, timeout):
        name = request.full_url.rsplit("/", 1)[1]
        requests.append((name, request.headers.get("Range")))
        data = server[name]
        rng = request.headers.get("Range")
        if rng:
            return FakeResponse(data[int(rng[6:-1]) :], 206)
        return FakeResponse(data, 200)

    monkeypatch.setattr(download_mod, "urlopen", fake_urlopen)
    root = tmp_path / "DIV2K"
    root.mkdir()
    half = len(server["DIV2K_valid_HR.zip"]) // 2
    (root / ".downloads").mkdir()
    (root / ".downloads" / "DIV2K_valid_HR.zip.part").write_bytes(
        server["DIV2K_valid_HR.zip"][:half]
    )  # interrupted run
    ds = DIV2K(root, 2, split="valid", download=True, progress=False)
    assert ("DIV2K_valid_HR.zip", f"bytes={half}-") in requests
    assert ("DIV2K_valid_LR_bicubic_X2.zip", None) in requests
    assert np.array_equal((ds[0]["hr"] * 255).round().byte().permute(1, 2, 0).numpy(), hr)
    assert sorted(p.name for p in root.iterdir()) == ["DIV2K_valid_HR", "DIV2K_valid_LR_bicubic"]
    requests.clear()
    DIV2K(root, 2, split="valid", download=True, progress=False)
    assert requests == []  # present folders are not fetched again


def test_div2k_download_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(request, timeout):
        raise URLError("Name or service not known")

    monkeypatch.setattr(download_mod, "urlopen", offline)
    with pytest.raises(DownloadError, match="offline"):
        DIV2K(tmp_path / "x", 2, split="valid", download=True, progress=False)
    payload = zip_bytes({"DIV2K_valid_HR/0801.png": rand_rgb(8, 8)})
    pin_archives(monkeypatch, "DIV2K", {"DIV2K_valid_HR.zip": (len(payload), "0" * 64)})
    monkeypatch.setattr(download_mod, "urlopen", lambda request, timeout: FakeResponse(payload, 200))
    with pytest.raises(DownloadError, match="SHA-256"):
        DIV2K(tmp_path / "y", 2, split="valid", download=True, progress=False)
    assert not (tmp_path / "y" / ".downloads" / "DIV2K_valid_HR.zip.part").exists()
    assert not (tmp_path / "y" / "DIV2K_valid_HR").exists()


# --------------------------------------------------------------------------- prepare / samples


def test_prepare_dataset(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save(rand_rgb(50, 70), src / "zeta.png")
    save(Image.fromarray(rand_rgb(30, 27, 1)[..., 0]), src / "alpha.png")
    save(rand_rgb(10, 10), src / "tiny.png")
    (src / "bad.jpg").write_bytes(b"\xff\xd8\xff truncated")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        summary = prepare_dataset(src, tmp_path / "out", start_index=5)
    messages = " ".join(str(w.message) for w in record)
    assert "bad.jpg" in messages and "tiny.png" in messages
    assert summary["skipped"] == ["bad.jpg", "tiny.png"]
    assert summary["images"] == 2 and summary["mapping"] == {"0005.png": "alpha.png", "0006.png": "zeta.png"}
    out = tmp_path / "out"
    assert Image.open(out / "DIV2K_train_HR" / "0006.png").size == (60, 48)
    assert Image.open(out / "DIV2K_train_LR_bicubic" / "X3" / "0006x3.png").size == (20, 16)
    assert (out / "prepare_train.json").is_file()
    for scale in (2, 3, 4):
        assert len(DIV2K(out, scale, progress=False)) == 2
    with pytest.raises(ValueError, match="missing"):
        prepare_dataset(tmp_path / "missing", tmp_path / "o2")


def test_sample_set_and_names(isolated_cache: Path) -> None:
    folder = sample_images_dir()
    assert folder.parent == isolated_cache and len(list(folder.glob("*.png"))) >= 3
    assert benchmark_path("sample") == folder
    assert len(HRFolderDataset(folder, 4)) == len(list(folder.glob("*.png")))
    with pytest.raises(ValueError, match="not found"):
        benchmark_path("NoSuchSet")


# --------------------------------------------------------------------------- PatchPairs


@pytest.fixture
def patch_root(tmp_path: Path) -> Path:
    root = tmp_path / "train"
    for i in range(3):
        # Mid-range noise: bicubic overshoot never saturates, so float and uint8 paths compare.
        save(rand_rgb(40 + 8 * i, 44, seed=10 + i, lo=40, hi=216), root / f"im_{i}.png")
    return root


@pytest.mark.parametrize("augment", [False, True])
def test_patch_alignment(patch_root: Path, augment: bool) -> None:
    s, p = 2, 10
    ds = PatchPairs(patch_root, s, p, augment=augment, repeat=5)
    assert len(ds) == 15
    random.seed(0)
    rim = 0.0
    for i in range(len(ds)):
        item = ds[i]
        lr, hr = item["lr"], item["hr"]
        assert lr.shape == (3, p, p) and hr.shape == (3, p * s, p * s) and lr.dtype == torch.float32
        assert 0 <= float(lr.min()) and float(lr.max()) <= 1
        # LR was made from the whole image, so it matches the patch's own downscale only where
        # the kernel (half-width 2 LR pixels) stays inside the patch; the rim sees real
        # neighbours where imresize of the patch alone mirrors. A flip/rotation applied to one
        # side only would break the interior match too.
        diff = (lr.double() * 255 - imresize(hr.double() * 255, 1 / s)).abs()
        assert float(diff[:, 2:-2, 2:-2].max()) <= 1.1  # uint8 rounding (per pass) only
        rim = max(rim, float(diff[:, 0].max()), float(diff[:, :, 0].max()))
    assert rim > 2  # so excluding the rim is necessary, not cosmetic


def test_patch_y_and_pre_upsample(tmp_path: Path) -> None:
    hr = rand_rgb(32, 32, seed=3, lo=40, hi=216)
    save(hr, tmp_path / "one" / "a.png")
    ds = PatchPairs(tmp_path / "one", 2, 16, pre_upsample=True, augment=False)
    item = ds[0]  # patch == whole image: position is fixed
    assert item["lr"].shape == item["hr"].shape == (3, 32, 32)
    ilr = imresize_np(make_lr(hr, 2), 2)
    assert np.array_equal((item["lr"] * 255).round().byte().permute(1, 2, 0).numpy(), ilr)
    y = PatchPairs(tmp_path / "one", 2, 8, channels="y")[0]
    assert y["lr"].shape == (1, 8, 8) and y["hr"].shape == (1, 16, 16)


def test_patch_scale_aug_small_images_and_errors(patch_root: Path) -> None:
    save(rand_rgb(12, 12), patch_root / "small.png")
    with pytest.warns(UserWarning, match="small.png"):
        ds = PatchPairs(patch_root, 2, 12, scales_aug=FSRCNN_SCALES)
    # 3 images x 5 factors, minus versions whose LR side drops below 12 (0.6 x 40 / 2 = 12 stays).
    assert 10 <= len(ds.entries) <= 15
    with pytest.warns(UserWarning):
        assert len(PatchPairs(patch_root, 2, 12, scales_aug=(1.0, *FSRCNN_SCALES)).entries) == len(ds.entries)
    with pytest.raises(ValueError, match="at least"), pytest.warns(UserWarning):
        PatchPairs(patch_root, 4, 64)


def test_patch_disk_cache_matches_memory_and_dataloader_workers(patch_root: Path, tmp_path: Path) -> None:
    mem = PatchPairs(patch_root, 3, 8, cache="memory")
    disk = PatchPairs(patch_root, 3, 8, cache="disk", cache_dir=tmp_path / "pc")
    assert isinstance(disk.entries[0]["hr"], str) and len(list((tmp_path / "pc").glob("*.npy"))) == 6
    for i in range(3):
        random.seed(i)
        a = mem[i]
        random.seed(i)
        b = disk[i]
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    for ds, workers in ((mem, 0), (disk, 2)):
        batches = list(DataLoader(ds, batch_size=2, num_workers=workers))
        assert batches[0]["lr"].shape == (2, 3, 8, 8) and batches[0]["hr"].shape == (2, 3, 24, 24)
        assert len(batches[0]["hr_path"]) == 2


def _nearest_teacher(scale: int):
    calls = []

    def teacher(lr: np.ndarray) -> np.ndarray:
        calls.append(lr.shape)
        return lr.repeat(scale, axis=0).repeat(scale, axis=1)

    return teacher, calls


@pytest.mark.parametrize("channels", ["rgb", "y"])
def test_patch_teacher_output_is_cropped_and_augmented_with_its_patch(patch_root: Path, channels: str) -> None:
    s, p = 2, 6
    teacher, calls = _nearest_teacher(s)
    ds = PatchPairs(patch_root, s, p, channels=channels, augment=True, repeat=8, teacher=teacher, cache="memory")
    assert len(calls) == 3  # once per image, not per patch
    random.seed(1)
    for i in range(len(ds)):
        item = ds[i]
        assert item["teacher"].shape == item["hr"].shape
        # The teacher here is nearest-neighbour upscaling: its crop is exactly the LR patch, upscaled,
        # whatever flip or rotation the patch got (a crop or a transform applied to one side would not be).
        expected = item["lr"].repeat_interleave(s, dim=1).repeat_interleave(s, dim=2)
        assert torch.allclose(item["teacher"], expected, atol=1e-6, rtol=0)  # Y: float summation order
    assert "teacher" not in PatchPairs(patch_root, s, p, channels=channels)[0]


def test_patch_teacher_outputs_are_cached_per_teacher_and_checked(patch_root: Path, tmp_path: Path) -> None:
    teacher, calls = _nearest_teacher(3)
    first = PatchPairs(patch_root, 3, 8, cache_dir=tmp_path / "pc", teacher=teacher, teacher_id="aaa")
    assert first.cache == "disk"  # "auto" keeps a teacher's outputs on disk: a resumed run reads them back
    again = PatchPairs(patch_root, 3, 8, cache_dir=tmp_path / "pc", teacher=teacher, teacher_id="aaa")
    assert len(calls) == 3 and len(list((tmp_path / "pc").glob("*.teacher-aaa.npy"))) == 3
    PatchPairs(patch_root, 3, 8, cache="disk", cache_dir=tmp_path / "pc", teacher=teacher, teacher_id="bbb")
    assert len(calls) == 6  # another teacher's outputs are not reused; HR and LR are
    random.seed(0)
    item = again[0]
    assert torch.equal(item["teacher"], item["lr"].repeat_interleave(3, dim=1).repeat_interleave(3, dim=2))
    with pytest.raises(ValueError, match=r"the teacher returned uint8 \(\d+, \d+, 3\), expected uint8"):
        PatchPairs(patch_root, 3, 8, teacher=lambda lr: lr, cache="memory")


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_unlabelled_patches_take_the_images_as_lr_and_the_teacher_as_their_only_target(
    patch_root: Path, tmp_path: Path, cache: str
) -> None:
    s, p = 3, 8
    teacher, calls = _nearest_teacher(s)
    ds = PatchPairs(
        patch_root,
        s,
        p,
        cache=cache,
        cache_dir=tmp_path / "pc",
        teacher=teacher,
        teacher_id="t",
        unlabelled=True,
        scales_aug=(0.8,),
    )
    # 3 images x 2 sizes, each once labelled (LR = bicubic / 3) and once unlabelled (LR = the image itself).
    assert len(ds.entries) == 12 and len(calls) == 12
    shapes = [read_rgb8(patch_root / f"im_{i}.png").shape for i in range(3)]
    assert all(shape in calls for shape in shapes)  # the full-size images went to the teacher as they are
    unlabelled = [e for e in ds.entries if ds._array(e, "lr").shape in shapes]
    assert len(unlabelled) == 3
    for entry in unlabelled:
        assert ds._array(entry, "hr") is ds._array(entry, "teacher")
    if cache == "disk":  # the teacher's output is stored once, as the target of both terms
        assert len(list((tmp_path / "pc").glob("*-unlabelled.hr*.npy"))) == 0
        assert len(list((tmp_path / "pc").glob("*-unlabelled.teacher-t.npy"))) == 6
    random.seed(3)
    for i in range(len(ds)):
        item = ds[i]
        assert item["hr"].shape == item["teacher"].shape == (3, p * s, p * s)
        if i % 2:  # odd entries are unlabelled: the teacher (nearest-neighbour here) is the HR
            assert torch.equal(item["hr"], item["teacher"])
            assert torch.equal(item["hr"], item["lr"].repeat_interleave(s, dim=1).repeat_interleave(s, dim=2))
    with pytest.raises(ValueError, match="need a teacher"):
        PatchPairs(patch_root, s, p, unlabelled=True)


def test_patch_pairs_from_div2k(tmp_path: Path) -> None:
    build_div2k(tmp_path / "DIV2K", n=2)
    ds = PatchPairs(tmp_path, 2, 12)
    item = ds[0]
    assert item["lr_path"].endswith("x2.png") and item["hr"].shape == (3, 24, 24)


# --------------------------------------------------------------------------- unusable files in training folders


def _add_bad_files(folder: Path) -> dict[str, str]:
    """Every kind of unusable image file a training folder may hold; name -> the reason given for it."""
    folder.mkdir(parents=True, exist_ok=True)
    png = (Image.fromarray(rand_rgb(40, 44, 5)), io.BytesIO())
    png[0].save(png[1], "PNG")
    (folder / "truncated.png").write_bytes(png[1].getvalue()[:2000])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("I am text with a .png name\n")
    save(rand_rgb(1, 1), folder / "tiny.png")
    forged_png(folder / "bomb.png", 20000, 20000)
    return {
        "bomb.png": "too large, its header declares a decompression bomb: 400,000,000 pixels",
        "empty.png": "empty file",
        "text.png": "not a readable image file",
        "tiny.png": "",  # the patch or the prepare multiple says why
        "truncated.png": "corrupt or truncated image",
    }


def _skips(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, SkippedImage)]


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_patch_pairs_skip_unusable_files_and_train_on_the_rest(patch_root: Path, tmp_path: Path, cache: str) -> None:
    reasons = _add_bad_files(patch_root)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = PatchPairs(patch_root, 2, 12, cache=cache, cache_dir=tmp_path / "pc")
    assert sorted(Path(e["hr_path"]).name for e in ds.entries) == ["im_0.png", "im_1.png", "im_2.png"]
    skips = _skips(record)
    assert len(skips) == len(reasons), skips  # one line per file
    for name, reason in reasons.items():
        assert any(
            line.startswith(f"{patch_root / name}: {reason}") and line.endswith("; skipped") for line in skips
        ), name
    assert any("tiny.png: smaller than a 12px LR patch at x2; skipped" in line for line in skips)
    assert ds[0]["hr"].shape == (3, 24, 24)


def test_patch_pairs_without_a_usable_image_say_so(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    _add_bad_files(folder)
    (folder / "bomb.png").unlink()
    with (
        pytest.raises(ValueError, match=r"no training image is at least 8x8.*1 more failed"),
        pytest.warns(SkippedImage),
    ):
        PatchPairs(folder, 2, 8)  # tiny.png: too small; truncated.png: unusable; the others: unreadable headers
    (folder / "tiny.png").unlink()
    with (
        pytest.raises(ValueError, match=r"no usable training image: all 1 image files failed to decode"),
        pytest.warns(SkippedImage),
    ):
        PatchPairs(folder, 2, 8)  # only the truncated file has a readable header
    (folder / "truncated.png").unlink()
    with (
        pytest.raises(ValueError, match=r"no usable image file \(all 2 skipped: empty\.png.*text\.png"),
        pytest.warns(SkippedImage),
    ):
        PatchPairs(folder, 2, 8)


def test_prepare_skips_unusable_files_with_their_reason(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save(rand_rgb(50, 70), src / "good.png")
    reasons = _add_bad_files(src)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        summary = prepare_dataset(src, tmp_path / "out", scales=(2, 3))
    assert summary["images"] == 1 and summary["skipped"] == sorted(reasons)
    skips = _skips(record)
    assert len(skips) == len(reasons), skips
    for name, reason in reasons.items():
        assert any(line.startswith(f"{src / name}: {reason}") for line in skips), name
    assert any(line.startswith(f"{src / 'tiny.png'}: 1x1, smaller than 6x6") for line in skips)
    (src / "good.png").unlink()
    (src / "readme.txt").write_text("not an image, and no skipped image either")
    with (
        pytest.raises(ValueError, match=rf"no image could be prepared \(all {len(reasons)} skipped"),
        pytest.warns(SkippedImage),
    ):
        prepare_dataset(src, tmp_path / "out2", scales=(2, 3))
    assert not (tmp_path / "out2").exists()  # nothing written, not even empty folders


def test_cli_prepare_prints_one_line_per_skipped_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save(rand_rgb(50, 70), src / "good.png")
    reasons = _add_bad_files(src)
    env = {**os.environ, "SRWEB_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-m", "srweb.cli", "prepare", str(src), str(tmp_path / "out"), "--scales", "2", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert len(lines) == len(reasons) and all(line.startswith(f"srweb: warning: {src}/") for line in lines), lines
    assert json.loads(done.stdout)["skipped"] == sorted(reasons)
