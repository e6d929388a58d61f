"""Box geometry against hand-computed boxes and against where the processor really puts the pixels;
round trips; LION's answer text written and read back from free text."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from PIL import Image, ImageDraw

from mof_llava.data import boxes


def test_pad_moves_the_short_axis_by_the_rounded_down_half_of_the_difference():
    # 200x120: the square is 200 wide, the picture starts (200 - 120) // 2 = 40 rows down
    assert boxes.to_model_input(200, 120, "pad").apply((50, 30, 150, 90)) == pytest.approx(
        (50 / 200, 70 / 200, 150 / 200, 130 / 200)
    )
    # portrait: the offset is on x; an odd difference rounds down: (201 - 120) // 2 = 40
    assert boxes.to_model_input(120, 201, "pad").apply((0, 0, 120, 201)) == pytest.approx(
        (40 / 201, 0.0, 160 / 201, 1.0)
    )


def test_crop_resizes_the_short_side_and_cuts_the_centre():
    # continuous: scale 1/120, width 200/120, the crop starts at (200/120 - 1) / 2 = 1/3
    assert boxes.to_model_input(200, 120, "crop").apply((50, 30, 150, 90)) == pytest.approx(
        (50 / 120 - 1 / 3, 0.25, 150 / 120 - 1 / 3, 0.75)
    )
    # at the processor's side 112: resized to int(112 * 200 / 120) = 186 x 112, crop from int(37.0) = 37
    assert boxes.to_model_input(200, 120, "crop", size=112).apply((50, 30, 150, 90)) == pytest.approx(
        ((50 * 186 / 200 - 37) / 112, 0.25, (150 * 186 / 200 - 37) / 112, 0.75)
    )


def test_image_frame_normalises_by_the_pictures_own_size():
    assert boxes.to_model_input(640, 480, "image").apply((64, 48, 320, 480)) == pytest.approx(
        (0.1, 0.1, 0.5, 1.0)
    )


def _bright_extent(pixels: torch.Tensor) -> tuple[int, int, int, int]:
    ys, xs = torch.nonzero(pixels[0] > pixels[0].max() / 2, as_tuple=True)  # white; pad colour is ~0
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("aspect", ["pad", "crop"])
@pytest.mark.parametrize(
    ("width", "height", "box"), [(200, 120, (50, 30, 150, 90)), (90, 160, (10, 60, 70, 150))]
)
def test_the_processor_puts_the_pixels_where_the_box_says(aspect, width, height, box):
    from mof_llava import MofLlavaProcessor
    from mof_llava.testing.tiny import build_tiny_tokenizer

    torch.set_num_threads(1)
    config = SimpleNamespace(
        image_size=112,
        image_mean=[0.48, 0.46, 0.41],
        image_std=[0.27, 0.26, 0.28],
        num_image_tokens=4,
        image_token_id=5,
    )
    processor = MofLlavaProcessor.for_config(config, build_tiny_tokenizer())
    picture = Image.new("RGB", (width, height), (0, 0, 0))
    ImageDraw.Draw(picture).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255, 255, 255))
    seen = _bright_extent(processor.preprocess_images([picture], aspect)[0])
    moved = boxes.to_model_input(width, height, aspect, size=112).apply(box)
    predicted = [v * 112 for v in boxes.clip(moved)]  # the portrait crop cuts the box's bottom
    assert seen == pytest.approx(predicted, abs=1.0)  # bicubic resampling blurs edges by under a pixel


@pytest.mark.parametrize("frame", ["pad", "crop", "image"])
def test_into_the_input_and_back_is_the_identity(frame):
    rng = random.Random(0)
    for _ in range(50):
        width, height = rng.randint(1, 2000), rng.randint(1, 2000)
        x1, x2 = sorted(rng.uniform(0, width) for _ in range(2))
        y1, y2 = sorted(rng.uniform(0, height) for _ in range(2))
        for size in (None, 336):
            step = boxes.to_model_input(width, height, frame, size)
            assert step.invert(step.apply((x1, y1, x2, y2))) == pytest.approx((x1, y1, x2, y2))


def test_steps_compose_and_undo_one_by_one():
    pad = boxes.pad_to_square(300, 100)
    assert pad.apply((0, 0, 300, 100)) == (0, 100, 300, 200)
    assert pad.invert((0, 100, 300, 200)) == (0, 0, 300, 100)
    shrink = boxes.resize(300, 300, 30, 30)
    assert pad.then(shrink).apply((30, 0, 60, 100)) == pytest.approx((3, 10, 6, 20))
    crop = boxes.center_crop(50, 30, 30, 30)
    assert crop.apply((10, 0, 40, 30)) == (0, 0, 30, 30)
    assert crop.invert((0, 0, 30, 30)) == (10, 0, 40, 30)


def test_visible_fraction_says_what_a_crop_cuts():
    crop = boxes.to_model_input(200, 120, "crop")  # keeps x in [40, 160] of the picture
    assert boxes.visible_fraction((50, 30, 150, 90), crop) == pytest.approx(1.0)
    assert boxes.visible_fraction((20, 0, 60, 120), crop) == pytest.approx(0.5)
    assert boxes.visible_fraction((0, 0, 40, 120), crop) == pytest.approx(0.0)
    assert boxes.visible_fraction((0, 0, 40, 120), boxes.to_model_input(200, 120, "pad")) == pytest.approx(
        1.0
    )


def test_answers_are_written_with_three_decimals():
    assert boxes.format_box((0.44, 0.06, 0.65, 0.36666)) == "[0.440,0.060,0.650,0.367]"
    assert boxes.parse_box(boxes.format_box((0.1234, 0.5, 0.75, 1.0))) == (0.123, 0.5, 0.75, 1.0)


@pytest.mark.parametrize(
    ("text", "box"),
    [
        ("[0.440,0.060,0.650,0.367]", (0.44, 0.06, 0.65, 0.367)),
        ("Answer: [0.44, 0.06, 0.65, 0.367]", (0.44, 0.06, 0.65, 0.367)),
        ("The man on the left is at (0.1,0.2,0.3,0.4).", (0.1, 0.2, 0.3, 0.4)),
        ("[ .5 , 0 , 1 , 1. ]", (0.5, 0.0, 1.0, 1.0)),
        ("from (0.1, 0.2) to (0.3, 0.4)", (0.1, 0.2, 0.3, 0.4)),
        ("[0.1,0.2],[0.3,0.4]", (0.1, 0.2, 0.3, 0.4)),
        ("first [0.1,0.2,0.3,0.4] then [0.5,0.6,0.7,0.8]", (0.1, 0.2, 0.3, 0.4)),
        (
            "[12, 40, 300, 220] in pixels",
            (12.0, 40.0, 300.0, 220.0),
        ),  # read as written; the scorer refuses it
        ("[0.3, 0.4, 0.1, 0.2]", (0.3, 0.4, 0.1, 0.2)),  # not reordered
        ("[-0.1, 0.2, 0.3, 0.4]", (-0.1, 0.2, 0.3, 0.4)),
    ],
)
def test_boxes_are_read_from_free_text(text, box):
    assert boxes.parse_box(text) == pytest.approx(box)


@pytest.mark.parametrize(
    "text", ["", "the dog on the left", "[0.1, 0.2, 0.3]", "0.1, 0.2, 0.3, 0.4", "(0.1, 0.2)"]
)
def test_text_without_a_box_reads_as_none(text):
    assert boxes.parse_box(text) is None


def test_proper_boxes_are_inside_the_unit_square_and_not_empty():
    assert boxes.is_proper((0.0, 0.0, 1.0, 1.0))
    assert not boxes.is_proper((0.3, 0.4, 0.1, 0.2))
    assert not boxes.is_proper((0.1, 0.1, 0.1, 0.5))
    assert not boxes.is_proper((12.0, 40.0, 300.0, 220.0))
    assert not boxes.is_proper((0.1, float("nan"), 0.3, 0.4))


def test_bad_frames_and_sizes_are_refused():
    with pytest.raises(ValueError, match="box frame must be one of pad, crop, image"):
        boxes.to_model_input(10, 10, "square")
    with pytest.raises(ValueError, match="positive"):
        boxes.to_model_input(0, 10, "pad")
