"""`mof-llava data check` reports what training would see, from the same code training uses."""

import json
import os
from pathlib import Path

import pytest
from data_helpers import image_record, text_record, turn, write_image, write_json, write_jsonl

from mof_llava.cli import main
from mof_llava.data.check import paper_processor


@pytest.fixture
def dataset(tmp_path):
    folder = tmp_path / "images"
    for i in range(6):
        write_image(folder / f"{i}.jpg", size=(30 + i, 20))
    (folder / "4.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (folder / "5.jpg").unlink()
    records = [image_record(f"i{i}", f"{i}.jpg", ("What colour is the shape?", "red")) for i in range(6)]
    records.append(image_record("again", "5.jpg", ("Second question on a missing image?", "yes")))
    records.append(text_record("t0", ("Hello", "Hi.")))
    records.append(
        text_record("long", *[("Tell me more about it please.", "Left or right, up or down " * 3)] * 8)
    )
    records.append(
        {"id": "bad", "image": "0.jpg", "conversations": [turn("human", "no marker"), turn("gpt", "x")]}
    )
    return write_json(tmp_path / "mix.json", records), folder


def run(capsys, *argv):
    code = main(["data", "check", *map(str, argv)])
    return code, capsys.readouterr().out


def run_without_images(capsys, path, tokenizer, mixer, cache_dir, *argv):
    """`data check` with a bare tokenizer and mixer, the images left unopened."""
    options = ["--tokenizer", tokenizer, "--mixer", mixer, "--no-images", "--cache-dir", cache_dir]
    return run(capsys, path, *options, *argv)


def test_report_with_a_saved_model(tmp_path, dataset, tiny_model_dirs, capsys):
    path, folder = dataset
    model = tiny_model_dirs("interleave")
    report_path = tmp_path / "report.json"
    code, out = run(
        capsys,
        path,
        "--image-folder",
        folder,
        "--model",
        model,
        "--max-length",
        200,
        "--workers",
        2,
        "--cache-dir",
        tmp_path / "c",
        "--json",
        report_path,
    )
    assert code == 1  # malformed record and bad images
    assert "32 visual tokens per image" in out
    assert "records   10: 7 with an image, 2 text-only, 1 malformed" in out
    assert "(record 9, id 'bad'): the record has one 'image' but its first human turn has no <image>" in out
    assert "images    6 distinct files checked, 2 missing or corrupt (used by 3 samples)" in out
    assert f"{folder}/5.jpg: file not found" in out and f"{folder}/4.jpg: cannot decode image" in out
    report = json.loads(report_path.read_text())
    assert report["truncated"] == 1 and report["rounds_dropped"] == 1  # the 8-round text record
    assert report["lengths_text"]["count"] == 2 and report["lengths_image"]["count"] == 7
    assert report["lengths_text"]["percentiles"]["p100"] > 200
    assert report["nothing_supervised"] == {} and "nothing supervised  none" in out


def test_tokenizer_and_mixer_give_the_paper_token_counts(tmp_path, tiny_parts, capsys):
    assert paper_processor(str(tiny_parts.llm), "none").num_image_tokens == 576
    assert paper_processor(str(tiny_parts.llm), "additive").num_image_tokens == 576
    assert paper_processor(str(tiny_parts.llm), "interleave").num_image_tokens == 1152
    path = write_jsonl(tmp_path / "d.jsonl", [image_record("a", "x.jpg", ("Q?", "A."))] * 3)
    code, out = run_without_images(
        capsys, path, tiny_parts.llm, "interleave", tmp_path / "c", "--max-length", 1000
    )
    assert code == 0 and "images    not checked" in out
    assert "nothing supervised  3 (100.00%): 3 the image does not fit in max_length" in out
    assert "id 'a'" in out


def test_plain_template_and_errors(tmp_path, tiny_parts, capsys):
    path = write_json(tmp_path / "d.json", [text_record("t", ("Q", "A"))])
    code, out = run_without_images(
        capsys, path, tiny_parts.llm, "none", tmp_path / "c", "--template", "plain"
    )
    assert code == 1 and "the 'plain' template takes one image and one caption" in out
    with pytest.raises(SystemExit, match="--tokenizer needs --mixer"):
        main(["data", "check", str(path), "--tokenizer", str(tiny_parts.llm)])
    with pytest.raises(SystemExit, match="--mixer is for --tokenizer"):  # not silently ignored
        main(["data", "check", str(path), "--model", str(tmp_path), "--mixer", "interleave"])
    with pytest.raises(SystemExit, match="pass --image-folder"):
        main(
            [
                "data",
                "check",
                str(write_json(tmp_path / "i.json", [image_record("a", "x.jpg", ("Q", "A"))])),
                "--tokenizer",
                str(tiny_parts.llm),
                "--mixer",
                "none",
                "--cache-dir",
                str(tmp_path / "c"),
            ]
        )


def test_paper_processor_preprocesses_like_the_model_builder(tiny_parts, processors, tmp_path):
    from PIL import Image

    built = processors("none")  # tiny model made by build_model, 56 px, CLIP statistics
    made = paper_processor(str(tiny_parts.llm), "none", image_size=56)
    image = Image.linear_gradient("L").convert("RGB").resize((90, 50))
    for aspect in ("pad", "crop"):
        assert (made.preprocess_images([image], aspect) == built.preprocess_images([image], aspect)).all()
    assert made.image_token_id == built.image_token_id
    assert made.encode("USER: <image>\nHi").ids[:3] == built.encode("USER: <image>\nHi").ids[:3]


def test_json_report_is_written_atomically(tmp_path, tiny_parts, capsys, monkeypatch):
    import mof_llava.data.check as check_module

    path = write_json(tmp_path / "d.json", [text_record("t", ("Q", "A"))])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    report_path = out_dir / "report.json"
    report_path.write_text('{"previous": true}')
    argv = [
        path,
        "--tokenizer",
        tiny_parts.llm,
        "--mixer",
        "none",
        "--no-images",
        "--cache-dir",
        tmp_path / "c",
        "--json",
        report_path,
    ]

    real_replace = os.replace

    def interrupted(src, dst):  # the process dies between writing the report and moving it into place
        if Path(dst) == report_path:
            raise KeyboardInterrupt
        real_replace(src, dst)  # the data caches

    monkeypatch.setattr(check_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(capsys, *argv)
    assert json.loads(report_path.read_text()) == {"previous": True}  # the old report survives whole
    assert [p.name for p in out_dir.iterdir()] == ["report.json"]  # and no temporary file is left

    monkeypatch.undo()
    code, _ = run(capsys, *argv)
    assert code == 0 and json.loads(report_path.read_text())["records"] == 1
    assert [p.name for p in out_dir.iterdir()] == ["report.json"]


def test_template_is_one_of_the_conversation_templates(tmp_path, capsys):
    from mof_llava.conversation import TEMPLATES

    path = write_json(tmp_path / "d.json", [text_record("t", ("Q", "A"))])
    argv = ["data", "check", str(path), "--tokenizer", str(tmp_path), "--mixer", "none"]
    with pytest.raises(SystemExit):  # refused by the parser, before any tokenizer loads
        main([*argv, "--template", "vicuna"])
    assert "invalid choice: 'vicuna'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "check", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "--template {" + ",".join(TEMPLATES) + "}" in usage and "plain (stage 1" in usage
