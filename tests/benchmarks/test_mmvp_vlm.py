"""MMVP-VLM: the reference's pairing, parity and tie rules, and CLIP-family models from local folders."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mof_llava.benchmarks import mmvp_vlm
from mof_llava.benchmarks.answers import index_answers
from mof_llava.benchmarks.synthetic import write_mmvp_vlm
from mof_llava.cli import main
from mof_llava.data.images import ImageLoadError, load_rgb_image


def _csv(tmp_path, rows):
    (tmp_path / "Questions.csv").write_text("Question ID,Type,Statement\n" + "".join(f"{r}\n" for r in rows))
    return tmp_path


def test_pairs_parity_and_folders(tmp_path):
    # quirk 6: root "MLLM_VLM Images", folder = Type, right image from the id's parity
    pairs = mmvp_vlm.read_pairs(
        _csv(tmp_path, ["1,Orientation,the dog faces left", "2,Orientation,the dog faces right"])
    )
    (pair,) = pairs
    assert pair.first.text == "a photo of the dog faces left"
    assert (pair.first.target, pair.second.target) == (0, 1)
    assert pair.image_paths == (
        tmp_path / "MLLM_VLM Images" / "Orientation" / "1.jpg",
        tmp_path / "MLLM_VLM Images" / "Orientation" / "2.jpg",
    )
    assert pair.pattern == "Orientation and Direction"


def test_pattern_comes_from_type_and_the_average_is_over_patterns(tmp_path):
    rows = [
        "1,Color,a",
        "2,Color,b",
        "3,Color,c",
        "4,Color,d",
        "241,Camera Perspective,e",
        "242,Camera Perspective,f",
    ]
    pairs = mmvp_vlm.read_pairs(_csv(tmp_path, rows))
    choices = {1: "img1", 2: "img2", 3: "img1", 4: "img1", 241: "img1", 242: "img2"}
    m = mmvp_vlm.score_pairs(choices, pairs)
    assert m["per_pattern"] == {
        "Color and Appearance": {"accuracy": 50.0, "pairs": 2},
        "Viewpoint and Perspective": {"accuracy": 100.0, "pairs": 1},
    }
    assert m["score"] == m["average"] == 75.0
    assert m["per_pair"][1] == {
        "qid1": 3,
        "qid2": 4,
        "pred1": "img1",
        "pred2": "img1",
        "gt1": "img1",
        "gt2": "img2",
        "correct": False,
    }


def test_tie_picks_the_second_image():
    assert mmvp_vlm.picks_first_image([3.0, 3.0]) == (False, 0.5)
    assert mmvp_vlm.picks_first_image([3.0, 2.0])[0] is True
    first, p = mmvp_vlm.picks_first_image([0.0, 2.0])
    assert not first and p == pytest.approx(1 / (1 + torch.e**2))


def test_broken_files_are_refused(tmp_path):
    with pytest.raises(mmvp_vlm.MMVPVLMDataError, match="3 statements; rows must come in pairs"):
        mmvp_vlm.read_pairs(_csv(tmp_path, ["1,Color,a", "2,Color,b", "3,Color,c"]))
    with pytest.raises(mmvp_vlm.MMVPVLMDataError, match="types 'Color' and 'Text'"):
        mmvp_vlm.read_pairs(_csv(tmp_path, ["1,Color,a", "2,Text,b"]))
    with pytest.raises(mmvp_vlm.MMVPVLMDataError, match="one odd and one even id"):
        mmvp_vlm.read_pairs(_csv(tmp_path, ["1,Color,a", "3,Color,b"]))


def test_answer_files_must_name_an_image(tmp_path):
    pairs = mmvp_vlm.read_pairs(_csv(tmp_path, ["1,Color,a", "2,Color,b"]))
    with pytest.raises(mmvp_vlm.MMVPVLMDataError, match="answer to statement 2 is 'left'"):
        mmvp_vlm.score_answers(
            index_answers([{"question_id": 1, "text": "img1"}, {"question_id": 2, "text": "left"}]), pairs
        )


# The tiny text and vision towers of both contrastive models below.
_SIZE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _tiny_clip(directory):
    """A tiny random CLIPModel + CLIPProcessor (letter-level BPE vocabulary) saved to `directory`."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)} | {c + "</w>": 26 + i for i, c in enumerate(letters)}
    vocab |= {"<|startoftext|>": 52, "<|endoftext|>": 53}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=54,
            **_SIZE,
            max_position_embeddings=77,
            bos_token_id=52,
            eos_token_id=53,
            pad_token_id=53,
        ),
        vision_config=dict(image_size=56, patch_size=14, **_SIZE),
        projection_dim=16,
    )
    model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    model.save_pretrained(directory)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return _tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def vlm_data(tmp_path_factory):
    return write_mmvp_vlm(tmp_path_factory.mktemp("mmvp_vlm"), pairs_per_pattern=1)


def test_batched_logits_equal_the_reference_per_pair_forward(tiny_clip, vlm_data):
    model, processor, model_type = mmvp_vlm.load_contrastive_model(tiny_clip)
    pairs = mmvp_vlm.read_pairs(vlm_data)
    batched = mmvp_vlm.pair_logits(model, processor, pairs, model_type)
    for pair, block in zip(pairs, batched):
        # the reference: model([img1, img2], [text1, text2]) -> logits_per_text
        images = [load_rgb_image(p) for p in pair.image_paths]
        inputs = processor(
            text=[pair.first.text, pair.second.text], images=images, return_tensors="pt", padding=True
        )
        with torch.no_grad():
            expected = model(**inputs).logits_per_text
        assert torch.tensor(block) == pytest.approx(expected, abs=1e-4)


def test_run_and_rescore_from_the_command_line(tiny_clip, vlm_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "run",
                "mmvp-vlm",
                "--model",
                str(tiny_clip),
                "--data",
                str(vlm_data),
                "--output-dir",
                str(out),
                "--batch-size",
                "4",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["score"] == metrics["score"] and metrics["pairs"] == 9 and len(metrics["per_pattern"]) == 9
    assert metrics["run"]["model_type"] == "clip"
    lines = [json.loads(x) for x in (out / "answers.jsonl").read_text().splitlines()]
    assert len(lines) == 18 and {x["text"] for x in lines} <= {"img1", "img2"}
    assert all((x["text"] == "img1") == (x["metadata"]["p_img1"] > 0.5) for x in lines)
    assert (out / "pairs.csv").read_text().splitlines()[0] == "qid1,qid2,pred1,pred2,gt1,gt2,correct"
    assert (
        main(["eval", "score", "mmvp-vlm", "--answers", str(out / "answers.jsonl"), "--data", str(vlm_data)])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["score"] == metrics["score"]


def test_siglip_pads_text_to_its_training_length(tiny_clip, vlm_data):
    from transformers import AutoProcessor, SiglipConfig, SiglipModel

    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(vocab_size=54, max_position_embeddings=64, **_SIZE),
        vision_config=dict(image_size=56, patch_size=14, **_SIZE),
    )
    model = SiglipModel(config).eval()
    processor = AutoProcessor.from_pretrained(tiny_clip)
    pairs = mmvp_vlm.read_pairs(vlm_data)[:2]
    batched = mmvp_vlm.pair_logits(model, processor, pairs, "siglip")
    inputs = processor(
        text=[pairs[0].first.text, pairs[0].second.text],
        images=[load_rgb_image(p) for p in pairs[0].image_paths],
        return_tensors="pt",
        padding="max_length",
        max_length=64,
    )
    assert inputs["input_ids"].shape[1] == 64
    with torch.no_grad():
        expected = model(**inputs).logits_per_text
    assert torch.tensor(batched[0]) == pytest.approx(expected, abs=1e-4)


def test_non_contrastive_checkpoints_and_missing_images_get_clear_errors(
    tiny_model_dirs, tiny_clip, tmp_path
):
    with pytest.raises(mmvp_vlm.MMVPVLMDataError, match="MMVP-VLM scores image-text models"):
        mmvp_vlm.load_contrastive_model(tiny_model_dirs("interleave"))
    # the README's folder names (underscores) are not the real ones
    data = _csv(tmp_path, ["241,Camera Perspective,a", "242,Camera Perspective,b"])
    (data / "MMVP_VLM_Images" / "Camera_Perspective").mkdir(parents=True)
    model, processor, model_type = mmvp_vlm.load_contrastive_model(tiny_clip)
    with pytest.raises(ImageLoadError, match="MLLM_VLM Images/Camera Perspective/241.jpg: file not found"):
        mmvp_vlm.pair_logits(model, processor, mmvp_vlm.read_pairs(data), model_type)


def test_half_precision_checkpoints_run_in_float32(tiny_clip, vlm_data, tmp_path):
    from transformers import AutoModel

    half = tmp_path / "half"
    shutil.copytree(tiny_clip, half)
    AutoModel.from_pretrained(tiny_clip).half().save_pretrained(half)
    model, processor, model_type = mmvp_vlm.load_contrastive_model(half)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    pairs = mmvp_vlm.read_pairs(vlm_data)[:1]
    assert len(mmvp_vlm.pair_logits(model, processor, pairs, model_type)) == 1


def _vlm_config(model, data, out, **extra):
    from mof_llava.benchmarks.evaluate import EvalConfig
    from mof_llava.benchmarks.runner import Distributed

    return EvalConfig(
        benchmark="mmvp-vlm",
        options=mmvp_vlm.MMVPVLMOptions(data=data),
        model=model,
        output_dir=out,
        device="cpu",
        threads=1,
        batch_size=5,
        no_progress=True,
        dist=Distributed(),
        **extra,
    )


def test_the_runner_s_answers_are_the_pair_forward_s_picks(tiny_clip, vlm_data, tmp_path):
    """Through the runner each statement is scored in batches of statements (longest first), each
    against its pair's two images; its logits are those of the per-pair forward the reference does."""
    from mof_llava.benchmarks.evaluate import evaluate

    result = evaluate(_vlm_config(tiny_clip, vlm_data, tmp_path / "out"))
    model, processor, model_type = mmvp_vlm.load_contrastive_model(tiny_clip)
    pairs = mmvp_vlm.read_pairs(vlm_data)
    expected, statements = {}, {s.question_id: s.statement for p in pairs for s in (p.first, p.second)}
    for pair, block in zip(pairs, mmvp_vlm.pair_logits(model, processor, pairs, model_type)):
        expected |= {pair.first.question_id: block[0], pair.second.question_id: block[1]}
    lines = [json.loads(x) for x in result.answers.read_text().splitlines()]
    assert [x["question_id"] for x in lines] == [s.question_id for p in pairs for s in (p.first, p.second)]
    for line in lines:
        assert line["metadata"]["logits"] == pytest.approx(expected[line["question_id"]], abs=1e-4)
        assert line["prompt"] == "a photo of " + statements[line["question_id"]]  # no template around it
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["benchmark"] == "mmvp-vlm" and run["template"] is None and run["questions"] == 18
    assert result.metrics["run"]["settings"] == {"text_prefix": "a photo of "}


def test_an_interrupted_run_resumes_with_the_statements_left(tiny_clip, vlm_data, tmp_path, monkeypatch):
    from mof_llava.benchmarks.evaluate import evaluate

    finished = evaluate(_vlm_config(tiny_clip, vlm_data, tmp_path / "full"))
    out = tmp_path / "resumed"
    evaluate(_vlm_config(tiny_clip, vlm_data, out, limit=6))  # a smoke run: 6 statements, not scored
    scored_texts = []
    make_score_fn = mmvp_vlm.make_score_fn

    def counting(*args):
        score_batch = make_score_fn(*args)

        def answer(images, texts):
            scored_texts.extend(texts)
            return score_batch(images, texts)

        return answer

    monkeypatch.setattr(mmvp_vlm, "make_score_fn", counting)
    resumed = evaluate(_vlm_config(tiny_clip, vlm_data, out))
    assert len(scored_texts) == 12  # the 6 answered statements are not scored again
    texts = [(x["question_id"], x["text"]) for x in map(json.loads, resumed.answers.read_text().splitlines())]
    full = [(x["question_id"], x["text"]) for x in map(json.loads, finished.answers.read_text().splitlines())]
    assert texts == full and resumed.metrics["score"] == finished.metrics["score"]
    assert (out / "pairs.csv").read_text() == (tmp_path / "full" / "pairs.csv").read_text()


def test_the_parts_of_a_two_process_run_merge_into_the_same_answers(tiny_clip, vlm_data, tmp_path):
    """What rank r of 2 writes (statements r, r+2, ...) merges, with `eval merge`'s verb, into the
    answer file and scores of a one-process run, pairs.csv included."""
    from mof_llava.benchmarks.evaluate import MergeConfig, evaluate, merge

    finished = evaluate(_vlm_config(tiny_clip, vlm_data, tmp_path / "one"))
    lines = finished.answers.read_text().splitlines(keepends=True)
    out = tmp_path / "two"
    out.mkdir()
    for rank in (0, 1):
        (out / f"answers.part-00{rank}-of-002.jsonl").write_text("".join(lines[rank::2]))
    options = mmvp_vlm.MMVPVLMOptions(data=vlm_data)
    merged = merge(MergeConfig(benchmark="mmvp-vlm", options=options, output_dir=out))
    assert merged.answers.read_text() == finished.answers.read_text()
    assert merged.metrics["score"] == finished.metrics["score"] and merged.metrics["pairs"] == 9
    assert (out / "pairs.csv").read_text() == (tmp_path / "one" / "pairs.csv").read_text()
