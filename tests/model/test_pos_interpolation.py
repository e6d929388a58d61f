"""DINOv2's position table resize. `pos_interpolation="hub"` is what the paper ran (torch.hub DINOv2:
the stored M x M table resized by scale_factor = ((rows + 0.1) / M, (cols + 0.1) / M), bicubic,
antialias off, as in facebookresearch/dinov2 `DinoVisionTransformer.interpolate_pos_encoding`);
`"transformers"` is Dinov2Model's own resize to `size=(rows, cols)`.

The towers here store a 37 x 37 table (a 518 px checkpoint, like facebook/dinov2-large) and see
336 px images (a 24 x 24 patch grid), the paper's setting."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from mof_llava.model.configuration import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, TowerSpec
from mof_llava.model.towers import VisionTower

STORED, IMAGE, PATCH = 518, 336, 14  # 37 x 37 stored positions, 24 x 24 patches
MODELS = {
    "dinov2": (Dinov2Config, Dinov2Model, {}),
    "dinov2_with_registers": (Dinov2WithRegistersConfig, Dinov2WithRegistersModel, {"num_register_tokens": 4}),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _vision_config(model_type, image_size=STORED):
    config_class, _, extra = MODELS[model_type]
    return config_class(image_size=image_size, patch_size=PATCH, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, mlp_ratio=2, **extra)


def _tower(model_type, pos_interpolation):
    torch.manual_seed(0)
    spec = TowerSpec("dinov2", _vision_config(model_type).to_dict(), feature_layer=-1, pos_interpolation=pos_interpolation)
    tower = VisionTower(spec, IMAGE, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    table = tower.encoder.embeddings.position_embeddings
    with torch.no_grad():  # a smooth table with structure on every channel, as trained tables are
        side = math.isqrt(table.shape[1] - 1)
        i, j = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        freq = torch.linspace(0.5, 3.0, table.shape[2])
        field = torch.sin(freq * i.reshape(-1, 1) / side * math.pi) * torch.cos(freq * j.reshape(-1, 1) / side * 2)
        table[0, 1:] = field
        table[0, 0] = 0.3
    return tower


def _hub_table(table, rows, cols):
    """The hub's formula, written out: the stored grid M = sqrt(N), resized by a scale factor."""
    n = table.shape[1] - 1
    m = int(math.sqrt(n))
    grid = table[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, scale_factor=((rows + 0.1) / m, (cols + 0.1) / m), mode="bicubic", antialias=False)
    assert resized.shape[-2:] == (rows, cols)
    return torch.cat([table[:, :1], resized.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], dim=1)


def _plain_features(model_type, state, image_size, pixels):
    """Layer -1 patch features of a plain transformers model built for `image_size`."""
    model = MODELS[model_type][1](_vision_config(model_type, image_size)).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
    return hidden[:, -(IMAGE // PATCH) ** 2 :]


@pytest.mark.parametrize("model_type", sorted(MODELS))
def test_hub_interpolation_equals_the_hub_formula_at_336px(model_type):
    tower = _tower(model_type, "hub")
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    state = dict(tower.encoder.state_dict())
    grid = IMAGE // PATCH
    # A model built for 336 px with the table pre-resized by the hub formula needs no resizing itself.
    state["embeddings.position_embeddings"] = _hub_table(state["embeddings.position_embeddings"], grid, grid)
    expected = _plain_features(model_type, state, IMAGE, pixels)
    features = tower(pixels)
    assert features.shape == (2, grid * grid, 32)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)
    # and transformers' resize is far from it: the tolerance above tells the two apart
    plain = _plain_features(model_type, tower.encoder.state_dict(), STORED, pixels)
    assert (plain - expected).abs().max() > 1e-2


@pytest.mark.parametrize("model_type", sorted(MODELS))
def test_transformers_interpolation_is_plain_transformers(model_type):
    tower = _tower(model_type, "transformers")
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    expected = _plain_features(model_type, tower.encoder.state_dict(), STORED, pixels)
    assert torch.equal(tower(pixels), expected)


def test_the_two_resizes_differ_where_the_grids_differ():
    hub, plain = _tower("dinov2", "hub"), _tower("dinov2", "transformers")
    pixels = torch.randn(1, 3, IMAGE, IMAGE)
    table = hub.encoder.embeddings.position_embeddings
    with torch.no_grad():
        hub_table = hub.encoder.embeddings.interpolate_pos_encoding(torch.zeros(1, 577, 32), IMAGE, IMAGE)
        plain_table = plain.encoder.embeddings.interpolate_pos_encoding(torch.zeros(1, 577, 32), IMAGE, IMAGE)
    # on a table of amplitude 1 the sampling points move enough to matter
    assert (hub_table - plain_table).abs().max() > 0.02
    assert (hub(pixels) - plain(pixels)).abs().max() > 0.02
    # at the stored size both keep the table as it is
    with torch.no_grad():
        same = hub.encoder.embeddings.interpolate_pos_encoding(torch.zeros(1, 1 + 37 * 37, 32), STORED, STORED)
    assert same is table


def test_hub_interpolation_survives_save_and_load(tmp_path):
    from mof_llava import MofLlavaForConditionalGeneration
    from mof_llava.model.configuration import MofLlavaConfig
    from mof_llava.testing.tiny import tiny_clip_vision_config, tiny_llama_config

    towers = [
        TowerSpec("clip", tiny_clip_vision_config(IMAGE, 32, num_layers=1).to_dict()),
        TowerSpec("dinov2", _vision_config("dinov2").to_dict(), feature_layer=-1, pos_interpolation="hub"),
    ]
    config = MofLlavaConfig(text_config=tiny_llama_config(64, hidden_size=32, num_layers=1).to_dict(),
                            vision_towers=towers, mixer={"mode": "interleave"}, image_size=IMAGE)
    torch.manual_seed(0)
    MofLlavaForConditionalGeneration(config).save_pretrained(tmp_path)
    loaded = MofLlavaForConditionalGeneration.from_pretrained(tmp_path)
    assert [t.pos_interpolation for t in loaded.config.towers] == ["transformers", "hub"]
    tower = loaded.vision_towers["dinov2"]
    pixels = torch.randn(1, 3, IMAGE, IMAGE)
    state = dict(tower.encoder.state_dict())
    state["embeddings.position_embeddings"] = _hub_table(state["embeddings.position_embeddings"], 24, 24)
    torch.testing.assert_close(tower(pixels), _plain_features("dinov2", state, IMAGE, pixels), rtol=0, atol=1e-5)
