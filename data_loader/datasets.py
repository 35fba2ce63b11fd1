"""CIFAR-10 from three layouts, decoded once into uint8 arrays:

(a) a torchvision CIFAR-10 root (`cifar-10-batches-py/`, downloaded when missing and allowed);
(b) an image folder holding `train/<class>/*` and/or `test/<class>/*` (jpg or png);
(c) a `.tar`, `.tar.gz`/`.tgz` or `.tar.xz` of layout (b), read in place.
"""

import functools
import io
import lzma
import re
import shutil
import tarfile
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.errors import DataError
from utils.paths import DATA_DIR
from utils.runtime import torchvision_module

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz")
SPLITS = ("train", "test")
DEFAULT_ROOT = Path(DATA_DIR)  # the one folder a download may create
LOCAL_COPY_HINT = (
    "point --data_dir at a local copy: a folder holding train/<class>/*.jpg (and test/<class>/*.jpg), "
    "or a .tar/.tar.gz/.tar.xz of that layout"
)


@dataclass
class Split:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    classes: list
    names: np.ndarray | None = None  # (N,) each image's file as class/file name (None: a CIFAR-10 batch file)


def load_splits(data_dir, download=False, max_pixels=None, needs=(), read_limit=None):
    """{'train': Split, 'test': Split} with whichever splits `data_dir` holds. A file or folder the
    process may not read is one line that says so (not the output errors' "cannot write").
    max_pixels: what the data set may decode in all (None: MAX_DATASET_PIXELS), counted from the
    images' headers before any pixel is decoded. needs: ((split, why), ...) the caller cannot do
    without; an image folder or archive without one says `why` before any image is decoded.
    read_limit: decode at most this many images of each split, a seeded subset in file order (None: all)."""
    try:
        path, max_pixels = Path(data_dir).expanduser(), max_pixels or MAX_DATASET_PIXELS
        return _load_splits(path, download, max_pixels, tuple(needs), read_limit)
    except PermissionError as e:
        raise DataError(f"{e.filename or data_dir}: cannot read ({e.strerror}); check its permissions") from None


def _load_splits(path, download, max_pixels, needs, read_limit):
    if path.is_file():
        if not path.name.lower().endswith(TAR_SUFFIXES):
            raise DataError(f"{path}: expected a folder or a {'/'.join(TAR_SUFFIXES)} archive")
        stat = path.stat()
        return _read_tar(str(path.resolve()), stat.st_mtime_ns, stat.st_size, max_pixels, needs, read_limit)
    if path.is_dir() and any((path / s).is_dir() for s in SPLITS):
        return _read_image_folder(path, max_pixels, needs, read_limit)
    if path.name.lower().endswith(TAR_SUFFIXES):
        raise DataError(f"{path}: archive not found")
    if path.exists() and not path.is_dir():  # a pipe, a socket, a device: never opened
        raise DataError(f"{path}: not a folder or an archive (a pipe, a socket or a device); not read")
    return {split: _first(data, read_limit) for split, data in _read_torchvision(path, download).items()}


def _subset(n, read_limit):
    """The indices of the images of a split of n that read_limit keeps (all of them for None)."""
    if read_limit is None or n <= read_limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).permutation(n)[:read_limit])


def _first(split, read_limit):
    keep = _subset(len(split.labels), read_limit)
    return Split(split.images[keep], split.labels[keep], split.classes)


GREY_16 = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # how Pillow opens a 16-bit grey PNG


def to_rgb(img):
    """A PIL image of any mode -> (H, W, 3) uint8 holding the values the picture shows. Pillow's
    `convert("RGB")` alone gets three cases wrong: 16-bit grey is clipped at 255 (a 16-bit PNG turns
    white), so it is scaled to 8 bits (/257); transparency is dropped, showing whatever colour lies
    under a transparent pixel, so it is composited over black; float images have no known range and
    are refused. Every other mode (1, L, P, RGB, CMYK, YCbCr, ...) converts as Pillow does."""
    if img.mode == "F":
        raise ValueError("a 32-bit float image; save it as 8-bit RGB or grey")
    if img.mode in GREY_16:
        return _by_rows(np.asarray(img), lambda grey: np.repeat(np.round(grey / 257.0).clip(0, 255)[..., None], 3, 2))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"))
        return _by_rows(rgba, lambda block: (block[..., :3].astype(np.uint16) * block[..., 3:] + 127) // 255)
    return np.asarray(img.convert("RGB"))


def _by_rows(pixels, convert, rows=256):
    """(H, W, 3) uint8 of convert(block) for blocks of `rows` rows of `pixels`: the wider types the
    arithmetic needs are held for one block at a time, not for a whole large picture."""
    out = np.empty((*pixels.shape[:2], 3), np.uint8)
    for start in range(0, len(pixels), rows):
        out[start : start + rows] = convert(pixels[start : start + rows])
    return out


MAX_PIXELS = 50_000_000  # larger pictures are refused before they are decoded (a few bytes can declare 2.5 G)


def max_file_bytes(max_pixels=MAX_PIXELS):
    """The largest image file read: an uncompressed RGBA picture of `max_pixels`, and 1 MiB of headers.
    A bigger file (or tar member) is refused before it is read into memory."""
    return 4 * max_pixels + 2**20


def check_file_size(size, name, max_pixels=MAX_PIXELS):
    if size > max_file_bytes(max_pixels):
        raise DataError(
            f"{name}: {size:,} bytes, more than an image of {max_pixels:,} pixels needs "
            f"({max_file_bytes(max_pixels):,}); not read"
        )


def open_image(data, name, max_pixels=MAX_PIXELS):
    """A PIL image of the bytes `data` (its header read, its pixels not yet decoded); a DataError
    naming `name` when it declares more than `max_pixels` pixels (a decompression bomb, or a
    picture far beyond any this network needs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            declared = f"{img.width}x{img.height} = {img.width * img.height:,}"
        except Image.DecompressionBombError as e:  # past Pillow's own limit: its message has the count
            img, count = None, re.search(r"\((\d+) pixels\)", str(e))
            declared = f"{int(count[1]):,}" if count else f"over {2 * Image.MAX_IMAGE_PIXELS:,}"
    if img is None or img.width * img.height > max_pixels:
        raise DataError(f"{name}: declares {declared} pixels, more than the limit of {max_pixels:,}; not decoded")
    return img


# A data set decodes to at most 3 bytes a pixel, into one array allocated once: 250 M pixels is 750 MB
# (CIFAR-10, both splits: 61 M pixels). data_loader.args.max_dataset_pixels raises it.
MAX_DATASET_PIXELS = 250_000_000


class PixelBudget:
    """What one data set may decode in all, counted from each image's header before its pixels are
    decoded: a small archive of many large (each allowed) pictures is one line, not gigabytes."""

    def __init__(self, where, limit=None):
        self.where, self.limit, self.used = where, limit or MAX_DATASET_PIXELS, 0

    def take(self, pixels, name):
        self.used += pixels
        if self.used > self.limit:
            raise DataError(
                f"{self.where}: its images declare over {self.limit:,} pixels in all ({3 * self.limit / 1e9:.1f} GB "
                f"decoded; reached at {name}); not decoded: a data set of this project holds small pictures "
                "(CIFAR-10: 61 million pixels); data_loader.args.max_dataset_pixels raises the limit"
            )


class Pending(NamedTuple):
    """An image file read but not decoded: where it goes (split, class, file), its name for messages,
    its bytes and the (width, height) its header declares."""

    split: str
    cls: str
    file: str
    name: str
    data: bytes
    size: tuple


def _pending(key, data, name, budget):
    """The Pending image of `data`, its size read from the header (no pixel decoded) and its pixels
    taken from the data set's budget."""
    try:
        with open_image(data, name) as img:
            budget.take(img.width * img.height, name)
            return Pending(*key, name, data, img.size)
    except UnidentifiedImageError:
        raise DataError(f"{name}: cannot decode image (not an image format PIL can read)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{name}: cannot read the image's header ({e})") from None


def _decode(data, name, budget=None):
    """One image file's bytes as RGB uint8 (HWC); its declared pixels are taken from `budget` (the
    data set's PixelBudget) before they are decoded."""
    try:
        with open_image(data, name) as img:
            if budget is not None:
                budget.take(img.width * img.height, name)
            return to_rgb(img)
    except UnidentifiedImageError:
        raise DataError(f"{name}: cannot decode image (not an image format PIL can read)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{name}: cannot decode image ({e})") from None


def _assemble(entries, where, needs=(), read_limit=None):
    """entries: Pending images -> {split: Split} with sorted classes and files. Every check that the
    headers allow comes first (one size for all); then each split is decoded into one uint8 array,
    allocated once."""
    if not entries:
        raise DataError(f"{where}: no images found under train/<class>/ or test/<class>/ ({', '.join(IMAGE_SUFFIXES)})")
    entries.sort(key=lambda e: (e.split, e.cls, e.file))
    out = {}
    classes_of = {s: sorted({e.cls for e in entries if e.split == s}) for s in SPLITS}
    present = [s for s in SPLITS if classes_of[s]]
    for split, why in needs:  # from the file names alone, before any image is decoded
        if split not in present:
            raise DataError(f"{where}: {why}")
    if len(present) == 2 and classes_of["train"] != classes_of["test"]:
        raise DataError(
            f"{where}: train and test hold different classes ({classes_of['train']} vs {classes_of['test']})"
        )
    _check_one_size(entries, where)
    for split in present:
        classes = classes_of[split]
        index = {c: i for i, c in enumerate(classes)}
        rows = [e for e in entries if e.split == split]
        rows = [rows[i] for i in _subset(len(rows), read_limit)]
        width, height = rows[0].size
        images = np.empty((len(rows), height, width, 3), np.uint8)
        for i, e in enumerate(rows):
            images[i] = _decode(e.data, e.name)
        labels = np.array([index[e.cls] for e in rows], dtype=np.int64)
        names = np.array([f"{e.cls}/{e.file}" for e in rows], dtype=object)
        out[split] = Split(images, labels, classes, names)
    return out


def _check_one_size(entries, where):
    """Every image has the size most of them have, by their headers; the odd ones out are named (not
    the first image read, which may itself be the odd one)."""
    sizes = Counter(e.size for e in entries)
    if len(sizes) == 1:
        return
    width, height = sizes.most_common(1)[0][0]
    odd = [e for e in entries if e.size != (width, height)]
    e = odd[0]
    others = f" and {len(odd) - 1} other image(s)" if len(odd) > 1 else ""
    raise DataError(
        f"{where}: {e.split}/{e.cls}/{e.file}{others} are not {width}x{height} like the other "
        f"{len(entries) - len(odd)} ({e.file} is {e.size[0]}x{e.size[1]})"
    )


def _split_parts(parts):
    """('x', 'train', 'cat', '0001.jpg') -> ('train', 'cat', '0001.jpg') or None. macOS metadata is
    not an image: `._0001.jpg` (AppleDouble) files and anything under `__MACOSX/` are skipped."""
    if len(parts) < 3 or parts[-3] not in SPLITS or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None
    if parts[-1].startswith("._") or "__MACOSX" in parts:
        return None
    return parts[-3], parts[-2], parts[-1]


@functools.lru_cache(maxsize=2)
def _read_tar(path, mtime_ns, size, max_pixels=None, needs=(), read_limit=None):  # mtime and size key the cache
    entries, seen, roots, budget = [], {}, set(), PixelBudget(path, max_pixels)
    try:
        with tarfile.open(path) as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise DataError(
                        f"{path}: holds over {MAX_MEMBERS:,} members (CIFAR-10 has 60,000 images); not a data set "
                        "of this project, not read further"
                    )
                if not (member.isfile() or member.islnk() or member.issym()):  # a linked image is an image
                    continue
                parts = PurePosixPath(member.name).parts
                key = _split_parts(parts)
                if key is None:
                    continue
                if member.name.startswith("/") or ".." in parts:
                    raise DataError(f"{path}: member {member.name!r} points outside the archive's folder; refused")
                if key in seen:
                    twice = f"{'/'.join(key)} twice ({seen[key]} and {member.name})"
                    raise DataError(f"{path}: holds {twice}; keep one copy")
                seen[key] = member.name
                roots.add(parts[:-3])
                if len(roots) > 1:
                    shown = " and ".join(sorted("/".join(r) + "/" if r else "(top level)" for r in roots))
                    raise DataError(f"{path}: images under two roots ({shown}); expected one train/ and test/ layout")
                check_file_size(member.size, f"{path}:{member.name}")  # a link's target: checked once read
                data = member_bytes(tar, member, path)
                entries.append(_pending(key, data, f"{path}:{member.name}", budget))
    except ARCHIVE_ERRORS as e:
        raise archive_error(path, e) from None
    return _assemble(entries, path, needs, read_limit)


MAX_MEMBERS = 1_000_000  # tarfile keeps every member's header in memory (about 1 KB each)


def member_bytes(tar, member, path):
    """The bytes of a file member, or of the member a hard or symbolic link points to inside the archive
    (a link that leads outside it, or nowhere, is one line)."""
    try:
        f = tar.extractfile(member)
    except KeyError:
        f = None
    if f is None:
        raise DataError(f"{path}: member {member.name!r} links to {member.linkname!r}, which the archive does not hold")
    data = f.read(max_file_bytes() + 1)
    check_file_size(len(data), f"{path}:{member.name}")
    return data


ARCHIVE_ERRORS = (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, OSError)  # a damaged or odd archive


def archive_error(path, e):
    """The one-line DataError for one of ARCHIVE_ERRORS raised while reading the tar `path`."""
    if isinstance(e, tarfile.ReadError):  # tarfile lists every method it tried, one per line
        if zipfile.is_zipfile(path):
            return DataError(f"{path}: is a zip archive, not a tar; unpack it and give the folder")
        first = (str(e).splitlines() or [type(e).__name__])[0].rstrip(":")
        return DataError(f"{path}: cannot read archive ({first}; expected a tar, tar.gz or tar.xz)")
    return DataError(f"{path}: cannot read archive ({str(e).splitlines()[0] if str(e) else type(e).__name__})")


def read_file(path):
    """A file's bytes; what the system refuses to read (a link to a device or to /proc, a file that
    vanished) is one line naming it."""
    try:
        return path.read_bytes()
    except PermissionError:
        raise  # load_splits says so, with its advice
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e}); not an image file") from None


def _read_image_folder(root, max_pixels=None, needs=(), read_limit=None):
    entries, budget = [], PixelBudget(root, max_pixels)
    for split in SPLITS:
        for folder in sorted(p for p in (root / split).glob("*") if p.is_dir()):
            if not any(_split_parts(f.parts) for f in folder.iterdir() if f.is_file()):
                raise DataError(
                    f"{folder}: an empty class folder (no {'/'.join(IMAGE_SUFFIXES)} files); "
                    "add its images or remove the folder"
                )
        for file in sorted((root / split).glob("*/*")):
            key = _split_parts(file.parts)
            if key is None or not file.is_file():
                continue
            check_file_size(file.stat().st_size, str(file))
            entries.append(_pending(key, read_file(file), str(file), budget))
    return _assemble(entries, str(root), needs, read_limit)


def _read_torchvision(root, download):
    CIFAR10 = torchvision_module("datasets").CIFAR10

    if not (root / CIFAR10.base_folder).is_dir():
        if download and not root.is_dir() and root.resolve() != DEFAULT_ROOT.resolve():
            raise DataError(
                f"{root}: no such folder; CIFAR-10 is downloaded only into {DEFAULT_ROOT}/ or into a "
                f"folder that exists (create it to download there); {LOCAL_COPY_HINT}"
            )
        if not download:
            raise DataError(
                f"{root}: no CIFAR-10 here (no {CIFAR10.base_folder}/, no train/ or test/ folder); {LOCAL_COPY_HINT}"
            )
        created = not root.exists()
        try:
            CIFAR10(str(root), train=True, download=True)
        except Exception as e:  # urllib/socket errors differ by platform; all mean "no download"
            if created:  # a failed command leaves what existed as it was: no empty data/ behind
                shutil.rmtree(root, ignore_errors=True)
            raise DataError(
                f"{root}: could not download CIFAR-10 ({type(e).__name__}: {str(e)[:120]}); {LOCAL_COPY_HINT}"
            ) from None
    out = {}
    for split in SPLITS:
        try:
            ds = CIFAR10(str(root), train=split == "train", download=False)
        except RuntimeError as e:
            raise DataError(
                f"{root}: CIFAR-10 files are damaged or incomplete ({e}); "
                f"delete {root / CIFAR10.base_folder} to download again"
            ) from None
        out[split] = Split(
            np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64), list(ds.classes)
        )
    return out
