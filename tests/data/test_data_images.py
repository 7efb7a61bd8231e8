from __future__ import annotations

from pathlib import Path

import mahotas
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from dragonfly.model.images import ImageLoadError, load_image


def test_monochrome1_chest_xray_is_inverted_and_8bit_rgb() -> None:
    path = get_testdata_file("RG1_UNCI.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (1841, 1955)
    out = np.asarray(img)[..., 0].astype(np.float64)
    raw = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    # MONOCHROME1: high stored values are dark, so the output must fall as raw values rise.
    assert np.corrcoef(out.ravel()[::97], raw.ravel()[::97])[0, 1] < -0.9
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("name,size", [("MR2_UNCI.dcm", (1024, 1024)), ("US1_UNCI.dcm", (640, 480))])
def test_other_dicom_modalities(name: str, size: tuple[int, int]) -> None:
    img = load_image(get_testdata_file(name))
    assert img.mode == "RGB" and img.size == size
    assert np.asarray(img).std() > 5


def test_real_photographs_from_packages(tmp_path: Path) -> None:
    from skimage import data

    retina = tmp_path / "retina.png"
    Image.fromarray(data.retina()).save(retina)
    assert load_image(retina).size == (1411, 1411)
    nuclear = Path(mahotas.__file__).parent / "demos" / "data" / "nuclear.png"
    img = load_image(nuclear)
    assert img.mode == "RGB" and img.size == (1344, 1024)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.new("RGB", (60, 20), "red").save(path, exif=exif)
    assert load_image(path).size == (20, 60)


def test_modes_become_rgb(tmp_path: Path) -> None:
    rgba = tmp_path / "a.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(rgba)
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black
    gray16 = tmp_path / "b.png"
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(gray16)
    img = load_image(gray16)
    assert img.mode == "RGB" and img.getpixel((7, 7)) == (255, 255, 255)


def test_bad_files_name_themselves(tmp_path: Path) -> None:
    full = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    garbage = tmp_path / "scan.dcm"
    garbage.write_bytes(b"\0" * 128 + b"DICM" + b"not really")
    for path, words in [
        (truncated, "cannot decode"),
        (tmp_path / "absent.png", "does not exist"),
        (garbage, "DICOM"),
    ]:
        with pytest.raises(ImageLoadError) as info:
            load_image(path)
        assert str(path) in str(info.value) and words in info.value.reason
