"""`mof-llava data check` called from Python, without argv: data.check_job.check(CheckJob)."""

import pytest
from data_helpers import image_record, text_record, write_image, write_json

from mof_llava.data.check_job import CheckJob, CheckOptionsError, check, load_processor


def test_options_that_do_not_go_together_name_the_flags(tmp_path):
    data = tmp_path / "d.json"
    cases = [
        ({"tokenizer": str(tmp_path)}, "--tokenizer needs --mixer"),
        ({"model": str(tmp_path), "mixer": "interleave"}, "--mixer is for --tokenizer"),
        ({}, "give one of --model and --tokenizer"),
    ]
    for given, message in cases:
        with pytest.raises(CheckOptionsError, match=message):  # before any tokenizer is read
            load_processor(CheckJob(data, **given))


def test_check_from_python(tmp_path, tiny_parts):
    folder = tmp_path / "images"
    write_image(folder / "0.jpg", size=(30, 20))
    records = [image_record("i0", "0.jpg", ("What colour?", "red")), text_record("t0", ("Hello", "Hi."))]
    job = CheckJob(
        write_json(tmp_path / "mix.json", records),
        tokenizer=str(tiny_parts.llm),
        mixer="interleave",
        image_folder=folder,
        cache_dir=tmp_path / "cache",
    )
    report = check(job)
    assert report.ok and (report.records, report.with_image, report.text_only) == (2, 1, 1)
    # the visual tokens of the paper's towers at 336 px, interleaved: 2 x 24 x 24
    assert report.num_image_tokens == 1152 and report.images_checked
    (folder / "0.jpg").write_bytes(b"not a jpeg")
    broken = check(job, load_processor(job))
    assert not broken.ok and broken.num_bad_images == 1
