"""The datasets ``srweb data fetch`` can download: public source, pinned size and SHA-256, layout.

Pins come from published records only; none is made up here:

- DIV2K: sizes and SHA-256 of the official ETH Zurich archives as recorded by TensorFlow
  Datasets (``tensorflow_datasets/url_checksums/div2k.txt``).
- Set14, BSD100, Urban100 (the HR images, from the ``eugenesiow/*`` dataset repositories on the
  Hugging Face Hub that deepinv, Qualcomm AI Hub models and others fetch), and General-100 (the
  FSRCNN authors' Google Drive file): no SHA-256 or size is published for these archives, so none
  is pinned. They are checked by reading the whole archive (zip CRCs / gzip CRC) and by the number
  of images the paper gives (14, 100, 100, 100); ``srweb data list`` says "not pinned".

Pure data, no downloads: :mod:`srweb.data.download` does the work.
"""

from __future__ import annotations

from dataclasses import dataclass

DIV2K_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
HF_DATASETS = "https://huggingface.co/datasets/"


@dataclass(frozen=True)
class Archive:
    """One downloadable archive and the folder it fills.

    Attributes:
        file: the archive's file name (kept under ``.downloads/`` while incomplete).
        url: where it is published.
        size: bytes, or None where no size is published.
        sha256: hex digest, or None where none is published (then the archive's own CRCs and
            ``images`` are the check).
        target: folder it fills, relative to the dataset's folder ("" = that folder itself).
        member: folder inside the archive that becomes ``target`` (None: the one folder holding images).
        images: number of images that folder must hold (None: not checked).
        split / scale / track: what part of the dataset it is (DIV2K: ``valid``, 2, ``bicubic``);
            scale None is the HR images.
    """

    file: str
    url: str
    size: int | None
    sha256: str | None
    target: str = ""
    member: str | None = None
    images: int | None = None
    split: str | None = None
    scale: int | None = None
    track: str = "bicubic"


@dataclass(frozen=True)
class Entry:
    """A dataset of the catalogue: ``name`` is its folder under the data root."""

    name: str
    summary: str
    citation: str
    homepage: str
    archives: tuple[Archive, ...]

    @property
    def pinned(self) -> bool:
        """Whether every archive has a published size and SHA-256."""
        return all(a.size is not None and a.sha256 for a in self.archives)

    def select(
        self, splits: tuple[str, ...] | None = None, scales: tuple[int, ...] = (), track: str = "bicubic"
    ) -> list[Archive]:
        """The archives for ``splits`` (None: all): the HR ones, plus LR ``track`` ones of ``scales``."""
        return [
            a
            for a in self.archives
            if (splits is None or a.split is None or a.split in splits)
            and (a.scale is None or (a.scale in scales and a.track == track))
        ]

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.split for a in self.archives if a.split))

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(sorted({a.scale for a in self.archives if a.scale}))


# (file, size, sha256) of the official DIV2K archives, from TensorFlow Datasets' url_checksums.
_DIV2K_PINS = (
    ("DIV2K_train_HR.zip", 3530603713, "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335"),
    ("DIV2K_valid_HR.zip", 448993893, "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc"),
    ("DIV2K_train_LR_bicubic_X2.zip", 925390592, "a53a424317575838dadce4bcd97cf7b744d6855f43740ed5f0245af3cf4bd850"),
    ("DIV2K_train_LR_bicubic_X3.zip", 427847282, "ad5c8e5507e2765823d3c2c5bd0934842efcd487c5370604c224090898b3163a"),
    ("DIV2K_train_LR_bicubic_X4.zip", 246914039, "f006b837f4eb52b82909aa01478e6d6d199eefce932179491d0c9dbb706dde3a"),
    ("DIV2K_valid_LR_bicubic_X2.zip", 117763600, "60eed9875c697df51204aa579e2a699e1d5215095788a097ff54dd17e2664d57"),
    ("DIV2K_valid_LR_bicubic_X3.zip", 54513392, "04b9a2ed3b4a0715d3924d3ae8514830c3328fac8d30512ce716d6f419e052a3"),
    ("DIV2K_valid_LR_bicubic_X4.zip", 31505881, "a50a5d1c4b88de4e8d300d8fb2b904c52fe93b2b298a4899697760d7cbb6d553"),
    ("DIV2K_train_LR_unknown_X2.zip", 734182735, "f166eeba119fc55bfc9a99c05561980e7a965382f36640ce8ef626c9f61d122c"),
    ("DIV2K_train_LR_unknown_X3.zip", 377245548, "b6455af3b2aa02d76ae3238c49d7aae3b48b0acdc44b5bdc0f4c02d40ebcb43b"),
    ("DIV2K_train_LR_unknown_X4.zip", 208956781, "d131c7aad51e0abbdc4433362ce899e5e75f40b9847ead70ee995188e8fd0adb"),
    ("DIV2K_valid_LR_unknown_X2.zip", 93433041, "ec50bb084c0011130874efd2ed7859b46e0aa7104c565818d5271ac315e04e0a"),
    ("DIV2K_valid_LR_unknown_X3.zip", 48143315, "ebf23a3e1ef6800cae97285d3a50d022d89b62655e685884c0abcc89eec5b809"),
    ("DIV2K_valid_LR_unknown_X4.zip", 26695095, "e3897555a98de1157c20974fb6093105fbc1ff5e9caf7bd348f58f6da140fbef"),
)


def _div2k_archive(file: str, size: int, sha256: str) -> Archive:
    parts = file.removesuffix(".zip").split("_")  # DIV2K, split, HR | LR, track, Xs
    split = parts[1]
    images = 800 if split == "train" else 100
    if parts[2] == "HR":
        return Archive(file, DIV2K_URL + file, size, sha256, f"DIV2K_{split}_HR", images=images, split=split)
    track, scale = parts[3], int(parts[4][1:])
    return Archive(
        file,
        DIV2K_URL + file,
        size,
        sha256,
        f"DIV2K_{split}_LR_{track}/X{scale}",
        images=images,
        split=split,
        scale=scale,
        track=track,
    )


def _hf_hr(name: str, images: int) -> Archive:
    file = f"{name}_HR.tar.gz"
    return Archive(
        file, f"{HF_DATASETS}eugenesiow/{name}/resolve/main/data/{file}", None, None, member=f"{name}_HR", images=images
    )


CATALOG: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry(
            "General-100",
            "100 BMP training images (FSRCNN's training set)",
            "C. Dong, C. C. Loy, X. Tang. Accelerating the Super-Resolution Convolutional Neural Network. ECCV 2016.",
            "http://mmlab.ie.cuhk.edu.hk/projects/FSRCNN.html",
            (
                Archive(
                    "General-100.zip",
                    "https://drive.google.com/uc?export=download&id=0B7tU5Pj1dfCMVVdJelZqV0prWnM",
                    None,
                    None,
                    member="General-100",
                    images=100,
                ),
            ),
        ),
        Entry(
            "DIV2K",
            "800 train + 100 valid 2K images, bicubic LR x2/x3/x4 (NTIRE 2017)",
            "E. Agustsson, R. Timofte. NTIRE 2017 Challenge on Single Image Super-Resolution: Dataset and Study. "
            "CVPRW 2017.",
            DIV2K_URL,
            tuple(_div2k_archive(*pin) for pin in _DIV2K_PINS),
        ),
        Entry(
            "Set14",
            "14 test images",
            "R. Zeyde, M. Elad, M. Protter. On Single Image Scale-Up Using "
            "Sparse-Representations. Curves and Surfaces 2010.",
            HF_DATASETS + "eugenesiow/Set14",
            (_hf_hr("Set14", 14),),
        ),
        Entry(
            "BSD100",
            "100 test images of the Berkeley segmentation set",
            "D. Martin, C. Fowlkes, D. Tal, J. Malik. A Database of Human Segmented Natural Images. ICCV 2001.",
            HF_DATASETS + "eugenesiow/BSD100",
            (_hf_hr("BSD100", 100),),
        ),
        Entry(
            "Urban100",
            "100 test images of buildings (regular structures)",
            "J.-B. Huang, A. Singh, N. Ahuja. "
            "Single Image Super-Resolution from Transformed Self-Exemplars. CVPR 2015.",
            HF_DATASETS + "eugenesiow/Urban100",
            (_hf_hr("Urban100", 100),),
        ),
    )
}


def find_entry(name: str) -> Entry | None:
    """The catalogue entry called ``name`` (case-insensitive), or None."""
    return next((entry for key, entry in CATALOG.items() if key.lower() == str(name).lower()), None)
