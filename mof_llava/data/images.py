"""Opening image files as RGB pictures: one function, two documented ways (`ImageLoading`).

Every reader in mof-llava (training data, benchmarks, pair mining) opens images through
`load_rgb_image`; `DEFAULT_IMAGE_LOADING` is the one place that decides how by default.

- `reference` (default): exactly PIL's `Image.open(path).convert("RGB")`, what LLaVA's training
  and evaluation code and MMVP do, so scores and trained models compare with theirs. EXIF
  orientation is ignored and transparent pixels take whatever colour sits under the alpha channel.
- `viewer`: the picture a person sees:
  - EXIF orientation is applied (phone photos are stored sideways with a rotation tag);
  - transparent images are composited over white instead of keeping the hidden colour;
  - 16-bit and 32-bit greyscale are scaled to 8 bits instead of clipped at 255;
  - CMYK with an embedded ICC profile goes through colour management, otherwise PIL's conversion.

Either way the file is decoded at once, and a file that cannot be decoded raises `ImageLoadError`
naming the file and the reason.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

ImageLoading = Literal["reference", "viewer"]
IMAGE_LOADINGS: tuple[str, ...] = get_args(ImageLoading)
# The references' way, so numbers compare with LLaVA's and MMVP's (see the module docstring).
DEFAULT_IMAGE_LOADING: ImageLoading = "reference"

# Background for transparent pixels: white, as image viewers and browsers show them.
DEFAULT_BACKGROUND = (255, 255, 255)


class ImageLoadError(ValueError):
    """An image file is missing or cannot be decoded. The message names the file."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def check_image_loading(loading: str, setting: str = "image_loading") -> None:
    """Refuse an unknown way of loading images, naming the setting."""
    if loading not in IMAGE_LOADINGS:
        raise ValueError(f"{setting} must be one of {', '.join(IMAGE_LOADINGS)}, got {loading!r}")


def load_rgb_image(
    source: str | Path | bytes,
    loading: ImageLoading = DEFAULT_IMAGE_LOADING,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
) -> Image.Image:
    """Open `source` (a path, or the bytes of an encoded image) and return an 8-bit RGB image,
    the way `loading` names (see the module docstring)."""
    check_image_loading(loading)
    name = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source)
        image.load()  # decode now, so truncated files fail here and not later in a worker
    except FileNotFoundError:
        raise ImageLoadError(name, "file not found") from None
    except UnidentifiedImageError:
        raise ImageLoadError(name, "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageLoadError(name, f"cannot decode image ({err})") from None
    try:
        return image.convert("RGB") if loading == "reference" else to_rgb(image, background)
    except (OSError, ValueError) as err:
        raise ImageLoadError(name, f"cannot convert {image.mode} image to RGB ({err})") from None


def to_rgb(image: Image.Image, background: tuple[int, int, int] = DEFAULT_BACKGROUND) -> Image.Image:
    """Convert an opened PIL image to upright 8-bit RGB (the `viewer` rules of the module docstring)."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_high_depth_to_uint8(image)).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode == "CMYK" and image.info.get("icc_profile"):
        source_profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        return ImageCms.profileToProfile(
            image, source_profile, ImageCms.createProfile("sRGB"), outputMode="RGB"
        )
    return image.convert("RGB")  # L, 1, CMYK without profile, YCbCr, LAB, HSV


def _high_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale a 16-bit (or 32-bit int / float) greyscale image to 0..255."""
    array = np.asarray(image)
    if image.mode == "F":
        # Float images carry no standard range: map [0, 1] to [0, 255] when they look normalised.
        scale = 255.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(array) * scale, 0, 255).round().astype(np.uint8)
    array = array.astype(np.int64)
    if array.max(initial=0) > 255 or image.mode.startswith("I;16"):
        return np.clip(array // 257, 0, 255).astype(np.uint8)  # 65535 -> 255
    return np.clip(array, 0, 255).astype(np.uint8)
