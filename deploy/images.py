"""Pictures to predict: image files, folders of them (searched recursively) and
tar archives (.tar, .tar.gz, .tar.xz), in a stable order. Any size or mode: converted to RGB (`to_rgb`) and
resized to the network's input size."""

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from data_loader.datasets import (
    ARCHIVE_ERRORS,
    MAX_MEMBERS,
    MAX_PIXELS,
    TAR_SUFFIXES,
    archive_error,
    check_file_size,
    member_bytes,
    open_image,
    to_rgb,
)
from utils.errors import DataError

# what predict.py picks up in folders and archives: every still-image format Pillow commonly reads
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class Picture:
    name: str  # the path, or archive:member
    image: np.ndarray | None  # (H, W, 3) uint8 at the network's size; None when it could not be read
    original_size: tuple = ()  # (width, height) as found
    error: str = ""


def decode(data, name, size, max_pixels=MAX_PIXELS):
    """Bytes of an image file -> Picture at `size` (height, width); a file that is not an image (or
    declares more than `max_pixels` pixels) is a Picture with its error, not an exception."""
    try:
        with open_image(data, name, max_pixels) as img:
            img = Image.fromarray(to_rgb(img))
            found = img.size
            if found != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return Picture(name, np.asarray(img), found)
    except DataError as e:
        return Picture(name, None, error=str(e))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        reason = "not an image format PIL can read" if isinstance(e, UnidentifiedImageError) else str(e)
        return Picture(name, None, error=f"{name}: cannot read as an image ({reason})")


def _read(size_of, read, name, size, max_pixels):
    """A Picture of one file: refused unread when its `size_of` bytes exceed what an image of
    max_pixels needs; otherwise `read()` and decoded."""
    try:
        check_file_size(size_of, name, max_pixels)
        data = read()
    except DataError as e:
        return Picture(name, None, error=str(e))
    except OSError as e:  # a link to a device or to /proc, a file that vanished: this picture alone
        return Picture(name, None, error=f"{name}: cannot read it ({e.strerror or e}); not an image file")
    return decode(data, name, size, max_pixels)


def _from_tar(path, size, max_pixels):
    """The archive's pictures, in name order: its files and its links to files (as the training data
    reads them); at most MAX_MEMBERS members are looked at."""
    try:
        with tarfile.open(path) as tar:
            members = []
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise DataError(f"{path}: holds over {MAX_MEMBERS:,} members; not read further")
                if (member.isfile() or member.islnk() or member.issym()) and member.name.lower().endswith(
                    IMAGE_SUFFIXES
                ):
                    members.append(member)
            for member in sorted(members, key=lambda m: m.name):
                name = f"{path}:{member.name}"
                if member.isfile():
                    yield _read(member.size, tar.extractfile(member).read, name, size, max_pixels)
                    continue
                try:  # a link: its target's bytes, or why there are none
                    data = member_bytes(tar, member, path)
                except DataError as e:
                    yield Picture(name, None, error=str(e))
                    continue
                yield decode(data, name, size, max_pixels)
    except ARCHIVE_ERRORS as e:
        raise archive_error(path, e) from None


def read_inputs(inputs, size, max_pixels=MAX_PIXELS):
    """Yield a Picture for every image named by `inputs` (files, folders, tars). A folder or an
    archive contributes its files with image suffixes; a file named directly is always tried.
    Pictures over `max_pixels` are refused before they are decoded (files too big for that many,
    before they are read). A path that does not exist is a DataError."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"{path}: no {'/'.join(IMAGE_SUFFIXES)} files in this folder")
            for file in files:
                yield _read(file.stat().st_size, file.read_bytes, str(file), size, max_pixels)
        elif path.is_file() and path.name.lower().endswith(TAR_SUFFIXES):
            yield from _from_tar(path, size, max_pixels)
        elif path.is_file():
            yield _read(path.stat().st_size, path.read_bytes, str(path), size, max_pixels)
        elif path.exists():  # a pipe, a socket, a device: never opened (a pipe would wait for a writer)
            yield Picture(str(path), None, error=f"{path}: not a regular file (a pipe, a socket or a device); not read")
        else:
            raise DataError(f"{path}: no such file or folder")
