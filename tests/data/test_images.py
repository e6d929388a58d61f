"""Images open exactly as the references open them (PIL's `.convert("RGB")`) by default, and with
`loading="viewer"` as the upright 8-bit RGB picture a person sees, whatever their encoding."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from mof_llava.data.config import DataConfig
from mof_llava.data.images import DEFAULT_IMAGE_LOADING, IMAGE_LOADINGS, ImageLoadError, load_rgb_image


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_exif_orientation_is_applied(tmp_path):
    # A 40x20 landscape picture stored with "rotate 90 CW" (orientation 6) is shown as 20x40 portrait.
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = load_rgb_image(_save(image, tmp_path / "rot.jpg", exif=exif, quality=100), loading="viewer")
    assert loaded.size == (20, 40)
    # Orientation 6 means the stored top-left corner ends up at the top-right.
    assert loaded.getpixel((5, 5))[0] < 60
    r, g, b = loaded.getpixel((15, 5))
    assert r > 200 and g < 60 and b < 60


def test_rgba_is_composited_over_white(tmp_path):
    image = Image.new("RGBA", (3, 3), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((1, 1), (255, 0, 0, 255))  # one opaque red pixel
    image.putpixel((0, 0), (0, 0, 255, 128))  # half-transparent blue
    loaded = load_rgb_image(_save(image, tmp_path / "a.png"), loading="viewer")
    assert loaded.mode == "RGB"
    assert loaded.getpixel((2, 2)) == (255, 255, 255)
    assert loaded.getpixel((1, 1)) == (255, 0, 0)
    r, g, b = loaded.getpixel((0, 0))
    assert b == 255 and 120 <= r <= 135 and r == g  # blue at 50 % over white


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    path = _save(image, tmp_path / "p.png", transparency=0)
    loaded = load_rgb_image(path, loading="viewer")
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 0)) == (0, 255, 0)


def test_palette_without_transparency(tmp_path):
    image = Image.new("P", (1, 1))
    image.putpalette([12, 34, 56] + [0] * 765)
    assert load_rgb_image(_save(image, tmp_path / "p.gif"), loading="viewer").getpixel((0, 0)) == (12, 34, 56)


def test_grayscale(tmp_path):
    loaded = load_rgb_image(_save(Image.new("L", (2, 2), 77), tmp_path / "g.png"), loading="viewer")
    assert loaded.mode == "RGB" and loaded.getpixel((0, 0)) == (77, 77, 77)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    array = np.array([[0, 32896, 65535]], dtype=np.uint16)  # black, mid grey, white
    path = tmp_path / "g16.png"
    Image.fromarray(array).save(path)
    loaded = load_rgb_image(path, loading="viewer")
    assert [loaded.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_cmyk_without_profile(tmp_path):
    image = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # pure red in CMYK
    loaded = load_rgb_image(_save(image, tmp_path / "c.jpg", quality=100), loading="viewer")
    r, g, b = loaded.getpixel((0, 0))
    assert r > 230 and g < 30 and b < 30


def test_bytes_input():
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (1, 2, 3)).save(buffer, format="PNG")
    assert load_rgb_image(buffer.getvalue(), loading="viewer").getpixel((1, 1)) == (1, 2, 3)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nope\.jpg: file not found"):
        load_rgb_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize("loading", IMAGE_LOADINGS)
def test_corrupt_file_names_the_file(tmp_path, loading):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match=r"bad\.jpg: not a recognised image format"):
        load_rgb_image(path, loading=loading)


def test_truncated_file_names_the_file(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "JPEG"
    )
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:300])
    with pytest.raises(ImageLoadError, match=r"cut\.jpg: cannot decode image"):
        load_rgb_image(path)


# ---------------------------------------------------------------------------------------------
# The default: exactly what LLaVA and MMVP do, `Image.open(path).convert("RGB")`


def _exif_rotated_jpeg(path):
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW" for display
    return _save(image, path, exif=exif, quality=100)


def _rgba_png(path):
    image = Image.new("RGBA", (3, 3), (0, 0, 255, 0))  # fully transparent *blue*: hidden colour kept
    image.putpixel((1, 1), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 255, 0, 128))
    return _save(image, path)


def _pil_reference(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("make", [_exif_rotated_jpeg, _rgba_png], ids=["exif", "rgba"])
def test_default_loads_exactly_as_pils_convert_rgb(tmp_path, make):
    path = make(tmp_path / ("x.jpg" if make is _exif_rotated_jpeg else "x.png"))
    assert DEFAULT_IMAGE_LOADING == "reference"
    loaded = load_rgb_image(path)
    assert loaded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(loaded), _pil_reference(path))
    # and the viewer option really is different on these files (so the comparison means something)
    viewer = np.asarray(load_rgb_image(path, loading="viewer"))
    assert viewer.shape != _pil_reference(path).shape or (viewer != _pil_reference(path)).any()


def test_reference_loading_keeps_the_stored_orientation_and_hidden_colour(tmp_path):
    assert load_rgb_image(_exif_rotated_jpeg(tmp_path / "r.jpg")).size == (40, 20)
    assert load_rgb_image(_rgba_png(tmp_path / "a.png")).getpixel((2, 2)) == (0, 0, 255)


def test_unknown_loading_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ValueError, match=r"image_loading must be one of reference, viewer, got 'exif'"):
        load_rgb_image(_rgba_png(tmp_path / "a.png"), loading="exif")
    with pytest.raises(ValueError, match=r"data\.image_loading must be one of reference, viewer"):
        DataConfig(data_path="x.json", image_loading="exif")
    assert DataConfig(data_path="x.json").image_loading == "reference"


@pytest.mark.parametrize("loading", [None, "viewer"])
def test_training_samples_use_the_data_configs_image_loading(tmp_path, processors, loading):
    from data_helpers import image_record, write_json
    from PIL import ImageOps

    from mof_llava.data.dataset import LlavaDataset

    processor = processors("none")
    (tmp_path / "img").mkdir()
    path = _exif_rotated_jpeg(tmp_path / "img" / "r.jpg")
    data = write_json(tmp_path / "d.json", [image_record("0", "r.jpg", ("What colour?", "red"))])
    settings = {} if loading is None else {"image_loading": loading}
    config = DataConfig(str(data), str(tmp_path / "img"), cache_dir=str(tmp_path / "c"), **settings)
    item = LlavaDataset.from_config(config, processor)[0]
    with Image.open(path) as image:  # the pipelines written out independently
        expected = image.convert("RGB") if loading is None else ImageOps.exif_transpose(image).convert("RGB")
    reference = processor.preprocess_images([expected], config.image_aspect_ratio)[0]
    assert torch.equal(item["pixel_values"], reference)
