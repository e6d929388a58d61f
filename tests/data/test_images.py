"""Images open as the upright 8-bit RGB picture a person sees, whatever their encoding."""

import io

import numpy as np
import pytest
from PIL import Image

from mof_llava.data.images import ImageLoadError, load_rgb_image


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_exif_orientation_is_applied(tmp_path):
    # A 40x20 landscape picture stored with "rotate 90 CW" (orientation 6) is shown as 20x40 portrait.
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = load_rgb_image(_save(image, tmp_path / "rot.jpg", exif=exif, quality=100))
    assert loaded.size == (20, 40)
    # Orientation 6 means the stored top-left corner ends up at the top-right.
    assert loaded.getpixel((5, 5))[0] < 60
    r, g, b = loaded.getpixel((15, 5))
    assert r > 200 and g < 60 and b < 60


def test_rgba_is_composited_over_white(tmp_path):
    image = Image.new("RGBA", (3, 3), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((1, 1), (255, 0, 0, 255))  # one opaque red pixel
    image.putpixel((0, 0), (0, 0, 255, 128))  # half-transparent blue
    loaded = load_rgb_image(_save(image, tmp_path / "a.png"))
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
    loaded = load_rgb_image(path)
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 0)) == (0, 255, 0)


def test_palette_without_transparency(tmp_path):
    image = Image.new("P", (1, 1))
    image.putpalette([12, 34, 56] + [0] * 765)
    assert load_rgb_image(_save(image, tmp_path / "p.gif")).getpixel((0, 0)) == (12, 34, 56)


def test_grayscale(tmp_path):
    loaded = load_rgb_image(_save(Image.new("L", (2, 2), 77), tmp_path / "g.png"))
    assert loaded.mode == "RGB" and loaded.getpixel((0, 0)) == (77, 77, 77)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    array = np.array([[0, 32896, 65535]], dtype=np.uint16)  # black, mid grey, white
    path = tmp_path / "g16.png"
    Image.fromarray(array).save(path)
    loaded = load_rgb_image(path)
    assert [loaded.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_cmyk_without_profile(tmp_path):
    image = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # pure red in CMYK
    loaded = load_rgb_image(_save(image, tmp_path / "c.jpg", quality=100))
    r, g, b = loaded.getpixel((0, 0))
    assert r > 230 and g < 30 and b < 30


def test_bytes_input():
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (1, 2, 3)).save(buffer, format="PNG")
    assert load_rgb_image(buffer.getvalue()).getpixel((1, 1)) == (1, 2, 3)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nope\.jpg: file not found"):
        load_rgb_image(tmp_path / "nope.jpg")


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match=r"bad\.jpg: not a recognised image format"):
        load_rgb_image(path)


def test_truncated_file_names_the_file(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:300])
    with pytest.raises(ImageLoadError, match=r"cut\.jpg: cannot decode image"):
        load_rgb_image(path)
