"""Load any image the datasets ship (JPEG/PNG/TIFF or DICOM) as an 8-bit RGB PIL image.

The processor and the data validators both go through `load_image`, so a file that
loads here loads everywhere, and a file that fails names itself in the error.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dragonfly.errors import DragonflyError

# DICOM files carry "DICM" at byte 128 after a 128-byte preamble; some old files have no
# preamble, so the suffix is a second hint.
_DICOM_MAGIC_OFFSET = 128
_DICOM_SUFFIXES = {".dcm", ".dicom"}
# Pillow's default MAX_IMAGE_PIXELS x 2 (89478485 x 2): the size at which Image.open raises
# DecompressionBombError, so by default we refuse exactly what Pillow refuses, but by name.
DEFAULT_MAX_IMAGE_PIXELS = 178956970
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageLoadError(DragonflyError):
    """An image file that cannot be used, with the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageTooLargeError(ImageLoadError):
    """An image with more pixels than allowed (a decompression bomb, or just too big)."""


def is_dicom(path: str | Path) -> bool:
    p = Path(path)
    if p.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with p.open("rb") as fh:
            fh.seek(_DICOM_MAGIC_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Open `path` fully decoded as RGB; raise ImageLoadError naming the file otherwise
    (ImageTooLargeError for a raster image of more than `max_pixels` pixels)."""
    p = Path(path)
    if not p.is_file():
        raise ImageLoadError(p, "file does not exist")
    if is_dicom(p):
        try:
            return _load_dicom(p)
        except NoFinitePixels as exc:
            raise ImageLoadError(p, str(exc)) from None
    return _load_raster(p, max_pixels)


@contextmanager
def _pillow_allows(max_pixels: int) -> Iterator[None]:
    """Let Pillow open up to `max_pixels` pixels while inside.

    Pillow's bomb check reads the module global Image.MAX_IMAGE_PIXELS. It is only raised
    when our limit is above Pillow's, for the duration of one load, under a lock (it is
    process-wide), and put back after; our own check against `max_pixels` is what applies.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is None or max_pixels <= 2 * current:
        yield
        return
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that: at `max_pixels`
        # it does neither for any image our own check lets through.
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _too_large(path: str | Path, size: tuple[int, int], max_pixels: int) -> ImageTooLargeError:
    w, h = size
    return ImageTooLargeError(path, f"{w}x{h} = {w * h} pixels, above the limit of {max_pixels} (max_image_pixels)")


def load_image_bytes(
    data: bytes, name: str, formats: tuple[str, ...], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> Image.Image:
    """Decode raster image bytes (e.g. from a request) as RGB with the same checks as
    `load_image`; only Pillow's decoders for ``formats`` (e.g. ``("PNG", "JPEG")``) are tried,
    so bytes from a stranger never reach the decoders of rarer formats. ``name`` stands for
    the path in errors."""
    return _load_raster(io.BytesIO(data), max_pixels, name, formats)


def _load_raster(
    source: Path | io.BytesIO, max_pixels: int, name: str | Path | None = None, formats: tuple[str, ...] | None = None
) -> Image.Image:
    label = source if name is None else name
    try:
        with _pillow_allows(max_pixels), Image.open(source, formats=formats) as img:
            # open() reads only the header: refuse a huge image before decoding it.
            if img.width * img.height > max_pixels:
                raise _too_large(label, img.size, max_pixels)
            # load() forces the full decode: a truncated JPEG opens fine and only fails here.
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except UnidentifiedImageError:
        what = f"not a {' or '.join(formats)} image" if formats else "not a recognised image format"
        raise ImageLoadError(label, what) from None
    except Image.DecompressionBombError as exc:
        # Not an OSError. Pillow refuses at open() what is over its own limit (which is at
        # least ours unless ours is raised), so its message carries the pixel count.
        raise ImageTooLargeError(label, f"{exc} (max_image_pixels is {max_pixels})") from None
    except ImageLoadError:
        raise
    except NoFinitePixels as exc:
        raise ImageLoadError(label, str(exc)) from None
    except Exception as exc:  # decoders raise OSError, SyntaxError, struct.error, ...: all bad files
        raise ImageLoadError(label, f"cannot decode image ({type(exc).__name__}: {exc})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: converting straight to RGB turns transparent pixels black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img, dtype=np.float64))).convert("RGB")
    return img.convert("RGB")


class NoFinitePixels(ValueError):
    """A float image whose every value is NaN or infinite: no picture, not a black one."""


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Stretch to 0..255 over the finite values; NaN and -inf pixels become 0, +inf 255."""
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        raise NoFinitePixels("every pixel value is NaN or infinite")
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if hi <= lo:
        return np.where(arr == np.inf, 255, 0).astype(np.uint8)
    clipped = np.clip(np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo), lo, hi)
    return np.round((clipped - lo) / (hi - lo) * 255.0).astype(np.uint8)


def _load_dicom(path: Path) -> Image.Image:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except InvalidDicomError as exc:
        raise ImageLoadError(path, f"not a valid DICOM file ({exc})") from None
    except (AttributeError, KeyError) as exc:
        raise ImageLoadError(path, f"DICOM has no pixel data ({exc})") from None
    except (OSError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise ImageLoadError(path, f"cannot decode DICOM pixel data ({exc})") from None

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        # Multi-frame series (ultrasound clips, CT stacks): the middle frame is the
        # most representative single picture.
        pixels = pixels[frames // 2]

    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR"):
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels = apply_color_lut(pixels, ds)
        elif photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        arr = pixels if pixels.dtype == np.uint8 else _to_uint8(pixels)
        return Image.fromarray(np.ascontiguousarray(arr[..., :3])).convert("RGB")

    values = apply_modality_lut(pixels, ds)
    # Windowing uses the file's own VOI (Window Center/Width or a VOI LUT); without one
    # the full value range is kept, which is what a viewer shows by default.
    values = apply_voi_lut(values, ds, index=0)
    arr = _to_uint8(np.asarray(values, dtype=np.float64))
    if photometric == "MONOCHROME1":
        # MONOCHROME1 means low values are white; invert so bone is bright as usual.
        arr = 255 - arr
    if arr.ndim != 2:
        raise ImageLoadError(path, f"unexpected DICOM pixel array shape {arr.shape}")
    return Image.fromarray(arr).convert("RGB")
