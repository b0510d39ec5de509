"""Test fixture: a deterministic zoo of valid and tricky image files for scanner/indexer tests."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# Expected upright (width, height) after EXIF transposition, keyed like the mapping.
EXPECTED_SIZE: dict[str, tuple[int, int]] = {}

_MAX_SIDE = 512  # bounds generation time whatever the source photo's size


def _jpeg_bytes(im: Image.Image, **kwargs: object) -> bytes:
    """Encode `im` as a baseline JPEG in memory."""
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90, **kwargs)
    return buf.getvalue()


def _png_bomb(im: Image.Image, width: int, height: int) -> bytes:
    """Encode `im` as PNG, then patch the IHDR to declare width x height, with a valid CRC."""
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))
    return bytes(data)


def _jpeg_bomb(im: Image.Image, width: int, height: int) -> bytes:
    """Encode `im` as JPEG, then patch its SOF segment to declare width x height."""
    data = bytearray(_jpeg_bytes(im))
    pos = 2  # after SOI
    while True:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        pos += 2 + length


def make_image_zoo(root: Path, photo: Path) -> dict[str, str | None]:
    """Write a zoo of tricky files under `root` (creating it) and return {relative_posix_path: expected}.

    `expected` is None for files an indexer must accept and embed, or a short lowercase keyword
    the skip reason must contain ('empty', 'truncated', 'not an image', 'too large', 'permission',
    'symlink'). Valid variants are derived from the real JPEG `photo`. Files with non-image
    extensions (`readme.txt`, `good/data.csv`) are written but never listed in the mapping, nor
    is the directory symlink loop `dirloop -> .`, which a scanner must not recurse into.
    `locked.jpg` (chmod 000) is only created when not running as root, where it would be readable.
    Also fills the module-level EXPECTED_SIZE. `root` must not already hold a zoo.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "good").mkdir(exist_ok=True)
    (root / "bad").mkdir(exist_ok=True)
    expected: dict[str, str | None] = {}

    def put(rel: str, data: bytes, keyword: str | None) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[rel] = keyword

    def save(rel: str, im: Image.Image, **kwargs: object) -> None:
        buf = io.BytesIO()
        im.save(buf, format=kwargs.pop("format"), **kwargs)
        put(rel, buf.getvalue(), None)

    with Image.open(photo) as src:
        rgb = src.convert("RGB")
    rgb.thumbnail((_MAX_SIDE, _MAX_SIDE))
    jpeg = _jpeg_bytes(rgb)

    # Valid files.
    put("my photo (1).jpg", jpeg, None)
    put("good/café/naïve 写真.jpg", jpeg, None)
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, rgb.width, dtype=np.uint8), (rgb.height, 1)))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    save("good/rgba.png", rgba, format="PNG")
    save("good/palette.png", rgb.quantize(colors=64), format="PNG", transparency=0)
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    save("good/grey16.png", grey16, format="PNG")
    save("good/cmyk.jpg", rgb.convert("CMYK"), format="JPEG", quality=90)
    save("good/grey.jpg", rgb.convert("L"), format="JPEG", quality=90)
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT), rgb.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]
    save("good/animated.gif", frames[0], format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    save("good/photo.webp", rgb, format="WEBP", quality=80)
    save("good/photo.bmp", rgb, format="BMP")
    save("good/photo.tiff", rgb, format="TIFF")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display, so store it rotated 90 CCW
    save("good/exif_rotated.jpg", rgb.transpose(Image.Transpose.ROTATE_90), format="JPEG", quality=90, exif=exif)
    EXPECTED_SIZE["good/exif_rotated.jpg"] = rgb.size
    save("good/nested/deeper/x.png", rgb, format="PNG")

    # Files to skip.
    put("empty.jpg", b"", "empty")
    put("bad/truncated.jpg", jpeg[: len(jpeg) * 2 // 5], "truncated")
    put("bad/notes.jpg", b"These are notes, not a JPEG.\n" * 4, "not an image")
    tiny = rgb.resize((16, 16))
    put("bad/bomb.png", _png_bomb(tiny, 30000, 30000), "too large")
    put("bad/bomb.jpg", _jpeg_bomb(tiny, 40000, 40000), "too large")
    if os.geteuid() != 0:
        put("bad/locked.jpg", jpeg, "permission")
        (root / "bad/locked.jpg").chmod(0)
    os.symlink("loop_b.jpg", root / "bad/loop_a.jpg")
    os.symlink("loop_a.jpg", root / "bad/loop_b.jpg")
    expected["bad/loop_a.jpg"] = expected["bad/loop_b.jpg"] = "symlink"

    # Never listed.
    (root / "readme.txt").write_text("Not an image.\n", encoding="utf-8")
    (root / "good/data.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    os.symlink(".", root / "dirloop", target_is_directory=True)
    return expected


if __name__ == "__main__":
    import sys
    import tempfile
    import time
    import warnings

    from PIL import ImageOps

    photo = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/datasets/caltech101/accordion/image_0001.jpg")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        zoo = make_image_zoo(Path(tmp) / "zoo", photo)
        print(f"built in {time.perf_counter() - t0:.3f}s")
        for rel, kw in zoo.items():
            path = Path(tmp) / "zoo" / rel
            if kw is None:
                with Image.open(path) as im:
                    im.load()
                    size = ImageOps.exif_transpose(im).size
                assert size == EXPECTED_SIZE.get(rel, size), (rel, size)
                status = f"ok {im.format} {im.mode} {size}"
            elif kw == "too large":
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    try:
                        Image.open(path).load()
                        raise AssertionError(f"{rel} did not raise")
                    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                        status = f"raises {type(exc).__name__}"
            else:
                status = "skip"
            print(f"{rel!r}: {kw!r}  [{status}]")
