"""`mine embed` with real (tiny, random) CLIP and DINOv2 towers on generated images: the stored
vectors are the towers' own pooled outputs, unreadable images are skipped and listed, and an
interrupted run resumes without redoing finished shards, also under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mining_helpers import write_image_folder

from mof_llava.mining import embed as embed_module
from mof_llava.mining.embed import EmbedConfig, embed_collection, list_images
from mof_llava.mining.store import EmbeddingStore
from mof_llava.mining.towers import EmbeddingTowerSpec

REPO = Path(__file__).resolve().parents[2]


def config(towers, **kw) -> EmbedConfig:
    specs = [EmbeddingTowerSpec("clip", str(towers.clip)), EmbeddingTowerSpec("dinov2", str(towers.dinov2))]
    return EmbedConfig(
        towers=kw.pop("specs", specs), **{"batch_size": 3, "shard_size": 4, "workers": 0, **kw}
    )


def reference_embeddings(model_dir: Path, paths: list[Path], pooling: str) -> np.ndarray:
    """Independent computation: the checkpoint's processor and model, pooled and L2-normalised."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, CLIPVisionModelWithProjection

    processor = AutoImageProcessor.from_pretrained(model_dir, backend="pil")
    pixels = processor(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        if pooling == "image_embeds":
            vectors = CLIPVisionModelWithProjection.from_pretrained(model_dir)(
                pixel_values=pixels
            ).image_embeds
        else:
            out = AutoModel.from_pretrained(model_dir)(pixel_values=pixels)
            if pooling == "pooler":
                vectors = out.pooler_output
            elif pooling == "cls":
                vectors = out.last_hidden_state[:, 0]
            else:  # mean over the 4 x 4 patch tokens, after the one CLS token
                assert out.last_hidden_state.shape[1] == 1 + 16
                vectors = out.last_hidden_state[:, 1:].mean(dim=1)
    vectors = vectors.numpy().astype(np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    ids = write_image_folder(root, 10, corrupt=("broken.jpg", "sub/truncated.png"))
    (root / "notes.txt").write_text("not an image suffix, not listed")
    return root, ids


def test_embeddings_are_the_towers_pooled_outputs(tmp_path, tiny_towers, images):
    root, ids = images
    result = embed_collection(root, tmp_path / "emb", config(tiny_towers))
    assert (result.images, result.rows, result.corrupt) == (12, 10, 2)
    store = EmbeddingStore(tmp_path / "emb")
    assert store.ids() == ids
    assert store.image_root == str(root.resolve())
    assert {t.name: (t.dim, t.pooling) for t in store.towers.values()} == {
        "clip": (24, "image_embeds"),  # CLIP's projection (24), not its hidden size (32)
        "dinov2": (40, "pooler"),
    }
    for name, model_dir, pooling in (
        ("clip", tiny_towers.clip, "image_embeds"),
        ("dinov2", tiny_towers.dinov2, "pooler"),
    ):
        stored = store.tower(name).read(0, 100)
        assert stored.dtype == np.float16
        expected = reference_embeddings(model_dir, [root / i for i in ids], pooling)
        np.testing.assert_allclose(stored.astype(np.float64), expected, atol=2e-3)
        assert np.allclose(np.linalg.norm(stored.astype(np.float64), axis=1), 1.0, atol=2e-3)


def test_unreadable_images_are_skipped_counted_and_listed(tmp_path, tiny_towers, images):
    root, ids = images
    embed_collection(root, tmp_path / "emb", config(tiny_towers, workers=2))  # decoded in worker processes
    manifest = json.loads((tmp_path / "emb" / "manifest.json").read_text())
    assert manifest["corrupt"] == 2 and manifest["rows"] == 10 and manifest["images"] == 12
    lines = (tmp_path / "emb" / "corrupt.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in lines) == ["broken.jpg", "sub/truncated.png"]
    assert all("cannot decode" in line or "not a recognised image" in line for line in lines)
    assert "broken.jpg" not in (tmp_path / "emb" / "ids.txt").read_text()


def test_image_list_input(tmp_path, tiny_towers, images):
    root, ids = images
    listing = root / "list.txt"
    chosen = [ids[3], ids[0], str((root / ids[5]).resolve())]  # relative and absolute, any order
    listing.write_text("\n".join(chosen) + "\n")
    assert list_images(listing) == (root.resolve(), chosen)
    embed_collection(listing, tmp_path / "emb", config(tiny_towers))
    store = EmbeddingStore(tmp_path / "emb")
    assert store.ids() == chosen
    expected = reference_embeddings(
        tiny_towers.dinov2, [root / ids[3], root / ids[0], root / ids[5]], "pooler"
    )
    np.testing.assert_allclose(store.tower("dinov2").read(0, 3).astype(np.float64), expected, atol=2e-3)


def test_pooling_choices(tmp_path, tiny_towers, images):
    root, ids = images
    specs = [
        EmbeddingTowerSpec("dino_mean", str(tiny_towers.dinov2), "mean"),
        EmbeddingTowerSpec("dino_cls", str(tiny_towers.dinov2), "cls"),
    ]
    embed_collection(root, tmp_path / "emb", config(tiny_towers, specs=specs, shard_size=100))
    store = EmbeddingStore(tmp_path / "emb")
    paths = [root / i for i in ids]
    np.testing.assert_allclose(
        store.tower("dino_mean").read(0, 99),
        reference_embeddings(tiny_towers.dinov2, paths, "mean"),
        atol=2e-3,
    )
    np.testing.assert_allclose(
        store.tower("dino_cls").read(0, 99),
        reference_embeddings(tiny_towers.dinov2, paths, "pooler"),
        atol=2e-3,
    )


def test_clip_checkpoint_without_projection_is_refused(tmp_path, tiny_towers, images):
    root, _ = images
    specs = [EmbeddingTowerSpec("clip", str(tiny_towers.clip_no_projection))]
    with pytest.raises(ValueError, match=r"lacks weights visual_projection.weight .*--pooling clip=pooler"):
        embed_collection(root, tmp_path / "emb", config(tiny_towers, specs=specs))
    with pytest.raises(ValueError, match="unknown pooling"):
        EmbeddingTowerSpec("clip", "x", "max")


def test_interrupted_run_resumes_without_redoing_finished_shards(tmp_path, tiny_towers, images, monkeypatch):
    root, ids = images
    out = tmp_path / "emb"
    real_embed_shard = embed_module._embed_shard
    calls = []
    kill = {"at_call": 2}

    def dies_on_second_shard(output, root_, ids_, k, cfg, towers, rank):
        calls.append(k)
        if len(calls) == kill["at_call"]:
            # Leave what a killed process leaves: a half-written temporary shard folder.
            (output / "shards" / f".{k:06d}.tmp-99999").mkdir()
            raise RuntimeError("killed")
        real_embed_shard(output, root_, ids_, k, cfg, towers, rank)

    monkeypatch.setattr(embed_module, "_embed_shard", dies_on_second_shard)
    with pytest.raises(RuntimeError, match="killed"):
        embed_collection(root, out, config(tiny_towers))
    assert not (out / "manifest.json").exists()
    first = out / "shards" / "000000" / "clip.npy"
    stamp = first.stat().st_mtime_ns

    calls.clear()
    kill["at_call"] = None
    result = embed_collection(root, out, config(tiny_towers))
    assert calls == [1, 2]  # shards 1 and 2 only (12 images, 4 per shard)
    assert result.shards_done_here == 2
    assert first.stat().st_mtime_ns == stamp
    assert not list((out / "shards").glob(".*tmp*"))

    fresh = tmp_path / "fresh"
    monkeypatch.setattr(embed_module, "_embed_shard", real_embed_shard)
    embed_collection(root, fresh, config(tiny_towers))
    for name in ("manifest.json", "ids.txt", "corrupt.tsv"):
        a, b = (out / name).read_text(), (fresh / name).read_text()
        assert a == b, name
    for tower in ("clip", "dinov2"):
        assert np.array_equal(
            EmbeddingStore(out).tower(tower).read(0, 99), EmbeddingStore(fresh).tower(tower).read(0, 99)
        )


def test_resume_with_other_images_or_towers_is_refused(tmp_path, tiny_towers, images):
    root, ids = images
    out = tmp_path / "emb"
    embed_collection(root, out, config(tiny_towers))
    listing = tmp_path / "fewer.txt"
    listing.write_text("\n".join(str(root / i) for i in ids[:3]) + "\n")
    with pytest.raises(ValueError, match="different ids_sha256"):
        embed_collection(listing, out, config(tiny_towers))
    specs = [EmbeddingTowerSpec("clip", str(tiny_towers.clip))]
    with pytest.raises(ValueError, match="different towers"):
        embed_collection(root, out, config(tiny_towers, specs=specs))
    # Same file names in another folder are other images: the shards would mix two collections.
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    with pytest.raises(ValueError, match="different image_root"):
        embed_collection(copy, out, config(tiny_towers))
    # The default precision is float32 on a CPU; another precision would mix outputs across shards.
    with pytest.raises(ValueError, match="different dtype \\('float32' vs now 'bfloat16'\\)"):
        embed_collection(root, out, config(tiny_towers, dtype="bfloat16"))


def test_empty_or_missing_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        list_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder or image list"):
        list_images(tmp_path / "nothing")
    (tmp_path / "list.txt").write_text("a.jpg\n\nb.jpg\n")
    with pytest.raises(ValueError, match=r"list.txt:2: empty line"):
        list_images(tmp_path / "list.txt")


@pytest.mark.slow
@pytest.mark.distributed
def _run_offline(argv):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_ranks_match_one_process(tmp_path, tiny_towers, images):
    root, _ = images
    common = [
        "mine",
        "embed",
        str(root),
        "--tower",
        f"clip={tiny_towers.clip}",
        "--tower",
        f"dinov2={tiny_towers.dinov2}",
        "--shard-size",
        "3",
        "--batch-size",
        "2",
        "--workers",
        "0",
    ]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "mof_llava.cli"]
    done = _run_offline([*launch, *common, "-o", str(tmp_path / "ddp")])
    assert done.returncode == 0, done.stderr[-3000:]
    single = _run_offline([sys.executable, "-m", "mof_llava.cli", *common, "-o", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr[-3000:]
    assert "10 of 12 images embedded" in done.stdout + single.stdout
    ddp, one = EmbeddingStore(tmp_path / "ddp"), EmbeddingStore(tmp_path / "one")
    assert ddp.ids() == one.ids() and ddp.manifest == one.manifest
    for tower in ("clip", "dinov2"):
        np.testing.assert_allclose(
            ddp.tower(tower).read(0, 99).astype(np.float32),
            one.tower(tower).read(0, 99).astype(np.float32),
            atol=1e-3,
        )
    # Each rank embedded its own shards: 4 shards of 3 images, 2 per rank.
    assert len(list((tmp_path / "ddp" / "shards").iterdir())) == 4


def test_sizes_are_checked():
    with pytest.raises(ValueError, match="shard_size must be >= 1, got 0"):
        EmbedConfig(shard_size=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        EmbedConfig(batch_size=0)
    with pytest.raises(ValueError, match="workers must be >= 0, got -1"):
        EmbedConfig(workers=-1)


@pytest.mark.parametrize(
    ("env", "device", "expected"),
    [
        ({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}, "cuda", "cuda:1"),
        ({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}, "auto", "cuda:1"),
        ({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}, "cuda:0", "cuda:0"),  # explicit: kept
        ({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}, "cpu", "cpu"),
        ({}, "cuda", "cuda:0"),  # a single process
        ({"RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "4"}, "cuda", "cuda:1"),  # 2 GPUs: shared
    ],
)
def test_device_under_torchrun_is_the_ranks_gpu(monkeypatch, env, device, expected):
    import torch

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    _, _, local_rank = embed_module._rank_and_world()
    assert embed_module._resolve_device(device, local_rank) == expected


def test_device_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert embed_module._resolve_device("auto", 1) == "cpu"
    assert embed_module._resolve_device("cuda", 1) == "cuda"  # left for torch to refuse by name
