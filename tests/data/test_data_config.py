"""DataConfig: LLaVA-1.5's per-stage defaults and clear errors."""

import pytest

from mof_llava.data.config import DataConfig


def test_stage_defaults_follow_llava_1_5():
    pretrain = DataConfig.for_stage("pretrain", "blip_laion_cc_sbu_558k.json", image_folder="imgs")
    assert (pretrain.template, pretrain.image_aspect_ratio, pretrain.group_by_modality_length) == (
        "plain",
        "crop",
        False,
    )
    finetune = DataConfig.for_stage("finetune", "llava_v1_5_mix665k.json")
    assert (finetune.template, finetune.image_aspect_ratio, finetune.group_by_modality_length) == (
        "vicuna_v1",
        "pad",
        True,
    )
    assert finetune.max_length == 2048 and finetune.on_bad_image == "fail"
    assert DataConfig.for_stage("finetune", "x.json", image_aspect_ratio="crop").image_aspect_ratio == "crop"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"template": "v1"}, "unknown template 'v1'"),
        ({"image_aspect_ratio": "square"}, "LLaVA's 'square', resize and centre-crop, is 'crop' here"),
        ({"on_bad_image": "substitute"}, "must be 'fail' or 'skip'"),
        ({"max_length": 0}, "must be positive"),
        ({"batch_arrangement": "llava"}, "must be 'sorted' or 'balanced'"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig("x.json", **kwargs)


def test_unknown_stage_and_setting():
    with pytest.raises(ValueError, match="unknown stage"):
        DataConfig.for_stage("stage3", "x.json")
    with pytest.raises(ValueError, match=r"unknown data settings \['max_len'\]"):
        DataConfig.for_stage("finetune", "x.json", max_len=10)
