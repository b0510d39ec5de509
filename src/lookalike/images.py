"""Find image files under a folder, name their category, and decode them safely into model input."""
from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".jfif", ".pgm", ".ppm"}
)
# Refuse images over this many pixels before decoding them (a decompression bomb declares a huge size).
MAX_PIXELS = 50_000_000
MAX_BYTES = 200 * 1024 * 1024
ORIENTATION_TAG = 0x0112


class BadImage(ValueError):
    """A file that cannot be used as an image; the message says why in a few words."""


class ImageTooLarge(BadImage):
    """An image declaring more pixels than the limit, refused before any pixel is decoded."""


@dataclass(frozen=True)
class FoundFile:
    path: str  # absolute path as found (symlinks not resolved)
    root: str  # absolute root folder it was found under
    category: str | None  # first-level subfolder of the root, None directly under the root
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Preprocess:
    """How an encoder wants its input: "squash" resizes the whole image to size x size; "crop" resizes
    the short side to size / crop_pct and centre-crops size x size. Then (x - mean) / std per channel."""

    size: int = 224
    resize: str = "squash"
    crop_pct: float = 1.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def decode_size(self) -> int:
        """The smallest side worth decoding (JPEG can decode at 1/2, 1/4, 1/8 scale)."""
        return self.size if self.resize == "squash" else int(round(self.size / self.crop_pct))


def category_of(path: Path, root: Path) -> str | None:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


def scan(root: str | os.PathLike) -> tuple[list[FoundFile], list[Skipped]]:
    """List image files under root (by extension). Symlinked folders are followed, each real folder once,
    so a symlink loop ends the walk there instead of going round.

    Returns the files, sorted by path, and the image-named entries that could not even be stat'ed.
    """
    top = Path(os.path.abspath(root))
    if not top.is_dir():
        raise FileNotFoundError(f"not a folder: {top}")
    found: list[FoundFile] = []
    skipped: list[Skipped] = []
    seen_folders: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        folder = os.stat(dirpath)
        if (folder.st_dev, folder.st_ino) in seen_folders:  # a symlink back to a folder already walked
            dirnames[:] = []
            continue
        seen_folders.add((folder.st_dev, folder.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError as e:
                skipped.append(Skipped(str(path), _os_reason(e)))
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped.append(Skipped(str(path), "not a regular file"))
                continue
            found.append(FoundFile(str(path), str(top), category_of(path, top), st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: f.path)
    return found, skipped


def _os_reason(e: OSError) -> str:
    import errno

    if e.errno == errno.ELOOP:
        return "symlink loop"
    if e.errno == errno.ENOENT:
        return "no such file (or a broken symlink)"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"cannot read: {e.strerror or e}"


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise BadImage(_os_reason(e)) from None
    if not data:
        raise BadImage("empty file")
    if len(data) > MAX_BYTES:
        raise BadImage(f"file too large (over {MAX_BYTES // (1024 * 1024)} MB)")
    return data


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open image bytes, refusing huge declared sizes before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge("image too large (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (unrecognised format)") from None
    except Exception as e:  # Pillow raises many types for malformed headers
        raise BadImage(f"not an image ({_short(e)})") from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image too large ({width}x{height} pixels; limit {max_pixels:,})")
    if width == 0 or height == 0:
        raise BadImage("image has no pixels")
    return img


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__


def to_rgb(img: Image.Image, draft_size: int | None = None) -> Image.Image:
    """Decode to upright RGB: first frame, EXIF orientation applied, alpha over white, 16-bit scaled."""
    try:
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))  # let libjpeg decode at 1/2, 1/4 or 1/8 scale
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float32)
            top = 65535.0 if arr.max() > 255 else 255.0
            img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        return img.convert("RGB")
    except OSError as e:
        msg = str(e)
        if "truncated" in msg or "broken data stream" in msg:
            raise BadImage("truncated or corrupt image data") from None
        raise BadImage(f"cannot decode image ({_short(e)})") from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadImage(f"cannot decode image ({_short(e)})") from None


def to_tensor(img: Image.Image, prep: Preprocess) -> np.ndarray:
    """RGB image -> float32 CHW array normalised as the encoder expects."""
    if prep.resize == "squash":
        img = img.resize((prep.size, prep.size), Image.BILINEAR, reducing_gap=3.0)
    else:
        short = prep.decode_size
        w, h = img.size
        scale = short / min(w, h)
        new_w, new_h = max(short, round(w * scale)), max(short, round(h * scale))
        img = img.resize((new_w, new_h), Image.BILINEAR, reducing_gap=3.0)
        left, top = (new_w - prep.size) // 2, (new_h - prep.size) // 2
        img = img.crop((left, top, left + prep.size, top + prep.size))
    # (x / 255 - mean) / std as one scale and one offset per channel, applied in place on the CHW copy
    std = np.asarray(prep.std, np.float32)
    scale, offset = (1.0 / (255.0 * std))[:, None, None], (np.asarray(prep.mean, np.float32) / std)[:, None, None]
    arr = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    arr *= scale
    arr -= offset
    return arr


@dataclass(frozen=True)
class Decoded:
    tensor: np.ndarray | None  # None once embedded
    hash: str
    width: int
    height: int


def decode_bytes(data: bytes, prep: Preprocess, max_pixels: int = MAX_PIXELS) -> Decoded:
    img = open_image(data, max_pixels)
    width, height = img.size
    if img.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8):  # stored sideways
        width, height = height, width
    rgb = to_rgb(img, draft_size=prep.decode_size)
    return Decoded(to_tensor(rgb, prep), content_hash(data), width, height)


def decode_file(path: str, prep: Preprocess) -> Decoded:
    return decode_bytes(read_bytes(path), prep)

