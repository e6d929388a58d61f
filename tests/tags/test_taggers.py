"""The taggers behind `ImageTagger`: a precomputed file, CLIP zero-shot over a vocabulary, none.

The zero-shot test builds a tiny CLIPModel whose text projection is solved so that the vocabulary's
text embeddings equal chosen targets: the words "red", "green" and "stripes" embed exactly as the
three test images do. A tagger that embeds text and images the way CLIP does must then name each
image's own word first; the probabilities are checked against a softmax written out here."""

import json

import pytest
import torch
from PIL import Image

from mof_llava.tags.taggers import ImageRef, NullTagger, PrecomputedTagger, TaggerError, read_vocabulary

VOCABULARY = ["red", "green", "stripes", "cat", "tree"]
PROMPT = "a photo of a {}"  # letters and spaces only: the tiny tokenizer's vocabulary


def _images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    stripes = Image.new("RGB", (56, 56), (255, 255, 255))
    for x in range(0, 56, 8):
        stripes.paste((0, 0, 0), (x, 0, x + 4, 56))
    pictures = {
        "red.png": Image.new("RGB", (56, 56), (220, 20, 20)),
        "green.png": Image.new("RGB", (60, 50), (20, 200, 40)),
        "stripes.png": stripes,
    }
    refs = []
    for name, picture in pictures.items():
        picture.save(folder / name)
        refs.append(ImageRef(name, folder / name))
    return refs


def _aligned_clip(directory, refs):
    """A tiny CLIP whose text tower embeds word k of VOCABULARY as image k (k < 3), the others at random."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)} | {c + "</w>": 26 + i for i, c in enumerate(letters)}
    (directory / "vocab.json").write_text(json.dumps(vocab | {"<|startoftext|>": 52, "<|endoftext|>": 53}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    text = dict(vocab_size=54, max_position_embeddings=77, bos_token_id=52, eos_token_id=53, pad_token_id=53)
    torch.manual_seed(0)
    model = CLIPModel(
        CLIPConfig(
            text_config={**text, **size},
            vision_config=dict(image_size=56, patch_size=14, **size),
            projection_dim=16,
        )
    ).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}
        ),
        tokenizer=tokenizer,
    )
    with torch.no_grad():
        pixels = processor(images=[Image.open(r.path).convert("RGB") for r in refs], return_tensors="pt")
        images = model.get_image_features(**pixels).pooler_output
        words = processor(text=[PROMPT.format(w) for w in VOCABULARY], return_tensors="pt", padding=True)
        pooled = model.text_model(**words).pooler_output  # [5, 32], before the projection
        targets = torch.cat([images, torch.randn(len(VOCABULARY) - len(refs), images.shape[1])])
        model.text_projection.weight.copy_((torch.linalg.pinv(pooled) @ targets).T)
        assert torch.allclose(model.get_text_features(**words).pooler_output, targets, atol=1e-4)
        scale = model.logit_scale.exp().item()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory, images, targets, scale


def test_clip_zero_shot_names_each_image_by_its_own_word(tmp_path):
    from mof_llava.tags.clip_zero_shot import CLIPZeroShotTagger

    refs = _images(tmp_path / "images")
    checkpoint, images, targets, scale = _aligned_clip(tmp_path / "clip", refs)
    tagger = CLIPZeroShotTagger(checkpoint, VOCABULARY, top_k=2, prompt=PROMPT)
    tags = tagger.tag(refs)
    assert [t[0] for t in tags] == ["red", "green", "stripes"] and all(len(t) == 2 for t in tags)
    # the probabilities: softmax over the vocabulary of scale * cosine, written out independently
    cosine = torch.nn.functional.normalize(images, dim=-1) @ torch.nn.functional.normalize(targets, dim=-1).T
    expected = torch.softmax(scale * cosine, dim=-1)
    pictures = [Image.open(r.path).convert("RGB") for r in refs]
    assert torch.allclose(tagger.probabilities(pictures), expected, atol=1e-4)
    # min_probability keeps only the words above it: between the best and second-best of image 0
    best, second = expected[0].topk(2).values.tolist()
    strict = CLIPZeroShotTagger(
        checkpoint, VOCABULARY, top_k=5, min_probability=(best + second) / 2, prompt=PROMPT
    )
    assert strict.tag(refs[:1]) == [["red"]]


def test_clip_zero_shot_refuses_a_prompt_without_a_slot_and_a_non_clip_checkpoint(tmp_path, tiny_parts):
    from mof_llava.tags.clip_zero_shot import CLIPZeroShotTagger

    with pytest.raises(TaggerError, match="needs a {}"):
        CLIPZeroShotTagger(tmp_path, VOCABULARY, prompt="a photo")
    with pytest.raises(TaggerError, match="takes a full CLIP checkpoint, this is 'dinov2'"):
        CLIPZeroShotTagger(tiny_parts.dinov2, VOCABULARY)


def test_precomputed_tags_from_json_and_jsonl(tmp_path):
    refs = [ImageRef("a.jpg", tmp_path / "a.jpg"), ImageRef("b/c.jpg", tmp_path / "b/c.jpg")]
    mapping = tmp_path / "tags.json"
    mapping.write_text(json.dumps({"a.jpg": ["dog", " grass"], "b/c.jpg": [], "unused.jpg": ["x"]}))
    assert PrecomputedTagger(mapping).tag(refs) == [["dog", "grass"], []]
    lines = tmp_path / "tags.jsonl"
    lines.write_text('{"image": "a.jpg", "tags": ["dog"]}\n\n{"image": "b/c.jpg", "tags": ["sky", "sea"]}\n')
    assert PrecomputedTagger(lines).tag(refs) == [["dog"], ["sky", "sea"]]
    assert NullTagger().tag(refs) == [[], []]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("t.json", '{"a.jpg": "dog"}', r"t.json: image 'a.jpg': 'tags' must be a list of non-empty strings"),
        ("t.json", '["a.jpg"]', "expected one JSON object"),
        (
            "t.jsonl",
            '{"image": "a.jpg", "tags": []}\n{"image": "a.jpg", "tags": []}\n',
            r"t.jsonl:2: .* twice",
        ),
        ("t.jsonl", '{"image": "a.jpg", "tags": []}\n{"image": \n', r"t.jsonl:2: not valid JSON"),
        ("t.jsonl", '{"tags": ["dog"]}\n', r"t.jsonl:1: a line must be an object"),
    ],
)
def test_a_bad_tags_file_is_one_line_naming_where(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(TaggerError, match=message):
        PrecomputedTagger(tmp_path / name)


def test_an_image_without_precomputed_tags_is_an_error(tmp_path):
    (tmp_path / "t.json").write_text('{"a.jpg": ["dog"]}')
    with pytest.raises(TaggerError, match=r"no tags for image 'b.jpg'"):
        PrecomputedTagger(tmp_path / "t.json").tag([ImageRef("a.jpg", tmp_path), ImageRef("b.jpg", tmp_path)])


def test_vocabulary_file(tmp_path):
    (tmp_path / "v.txt").write_text("dog\n# animals above\n\ncat  # a pet\n")
    assert read_vocabulary(tmp_path / "v.txt") == ["dog", "cat"]
    (tmp_path / "v.txt").write_text("dog\ndog\n")
    with pytest.raises(TaggerError, match=r"v.txt:2: 'dog' is listed twice"):
        read_vocabulary(tmp_path / "v.txt")
