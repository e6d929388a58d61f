"""Data pipeline benchmarks; results are recorded in docs/performance.md ("Data pipeline").

    .venv/bin/python scripts/bench_data.py                 # all parts, default sizes
    .venv/bin/python scripts/bench_data.py --part padding  # one part: throughput | padding | scale

throughput  samples/s of LlavaDataset + LlavaCollator through a DataLoader, with real JPEG decoding
            (640x480, COCO-like file sizes) and LLaVA-1.5 preprocessing at 336 px, per worker count;
            and where the time of one sample goes (read + tokenise, decode, preprocess).
padding     fraction of padding tokens per per-device batch, grouped sampler vs plain shuffle, on a
            synthetic length distribution shaped like llava_v1_5_mix665k, with 576 (baseline, A-MoF)
            and 1152 (I-MoF) visual tokens; and how evenly the ranks of a step are loaded. Beside them
            the packed sampler (data.packing): the recipe's samples per step, and a token budget of
            per-device batch x 2048 tokens per micro-batch.
scale       a synthetic 665K-record JSON array: time to index it, time of the one-time length pass,
            and the memory a dataset costs a process (vs `json.load` of the same file).

Tokenisation uses the offline tiny Llama-style tokenizer (mof_llava.testing.tiny): its small
vocabulary splits words into more pieces than Vicuna's, so tokenising is, if anything, slower here.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = (
    "the a of and to in is on with what colour shape image how many there are left right bus red man woman "
    "people street table dog cat sitting standing holding looking front back picture wearing white black "
    "answer question using single word phrase describe briefly shows green blue yellow circle square"
).split()


def log(*args):
    print(*args, flush=True)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def paper_visual_tokens() -> tuple[int, int]:
    """Visual tokens per image of LLaVA-1.5 / A-MoF and of I-MoF with the paper's towers (576, 1152)."""
    from mof_llava.model.configuration import MixerSpec, num_visual_tokens
    from mof_llava.model.presets import CLIP_L14_336

    grid = CLIP_L14_336.spec().grid(CLIP_L14_336.architecture["image_size"])
    return tuple(num_visual_tokens(MixerSpec(mode=mode), [grid] * n) for mode, n in (("none", 1), ("interleave", 2)))


# -- synthetic data ---------------------------------------------------------------------------------
def sentence(rng, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, n_words))


def synthetic_record(rng, i: int, image: str | None) -> dict:
    """Shaped like the 665K mix: image records are 1-6 rounds of short VQA; text-only records are
    longer ShareGPT-style conversations."""
    conversations = []
    if image is None:
        for _ in range(rng.integers(1, 6)):
            conversations += [
                {"from": "human", "value": sentence(rng, int(rng.integers(5, 60)))},
                {"from": "gpt", "value": sentence(rng, int(rng.integers(20, 300)))},
            ]
        return {"id": f"sharegpt_{i}", "conversations": conversations}
    for r in range(rng.integers(1, 7)):
        question = sentence(rng, int(rng.integers(5, 15)))
        conversations += [
            {"from": "human", "value": ("<image>\n" if r == 0 else "") + question},
            {"from": "gpt", "value": sentence(rng, int(rng.integers(1, 30)))},
        ]
    return {"id": f"{i:012d}", "image": image, "conversations": conversations}


def write_jpegs(folder: Path, n: int, rng) -> list[str]:
    """640x480 JPEGs at quality 90 with low-frequency content plus sensor-like noise: about the
    size of COCO train2017 files (mean ~160 KB)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        coarse = rng.random((12, 16, 3)) * 255
        image = Image.fromarray(coarse.astype(np.uint8)).resize((640, 480), Image.BICUBIC)
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 12, (480, 640, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
        names.append(f"{i:06d}.jpg")
    return names


def tiny_tokenizer_dir(root: Path) -> str:
    from mof_llava.testing.tiny import build_tiny_tokenizer

    build_tiny_tokenizer().save_pretrained(root / "tokenizer")
    return str(root / "tokenizer")


# -- throughput -------------------------------------------------------------------------------------
def bench_throughput(root: Path, n_images: int, n_samples: int, workers: list[int]) -> list[str]:
    import torch

    from mof_llava.data import LlavaCollator, LlavaDataset
    from mof_llava.data.check import paper_processor
    from mof_llava.data.images import load_rgb_image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    names = write_jpegs(root / "images", n_images, rng)
    sizes = [os.path.getsize(root / "images" / n) for n in names]
    records = [synthetic_record(rng, i, names[i % n_images]) for i in range(n_samples)]
    (root / "data.json").write_text(json.dumps(records))
    tokenizer = tiny_tokenizer_dir(root)
    lines = [
        f"JPEGs: {n_images} files 640x480, mean {np.mean(sizes) / 1e3:.0f} KB; {n_samples} image samples; "
        f"336 px; torch threads per worker 1",
        "",
        "| mixer (visual tokens) | aspect | stage of one sample (1 process) | CPU ms |",
        "|---|---|---|---|",
    ]
    torch.set_num_threads(1)
    for mixer in ("none", "interleave"):
        processor = paper_processor(tokenizer, mixer, 336)
        for aspect in ("pad", "crop"):
            dataset = LlavaDataset(
                root / "data.json",
                processor,
                image_folder=root / "images",
                image_aspect_ratio=aspect,
                cache_dir=root / "cache",
                template="vicuna_v1",
            )
            k = min(200, len(dataset))
            # CPU time of this process: what one worker spends per sample, whatever else the machine runs
            t0 = time.process_time()
            for i in range(k):
                dataset[i]
            total = (time.process_time() - t0) / k * 1e3
            t0 = time.process_time()
            images = [load_rgb_image(root / "images" / names[i % n_images]) for i in range(k)]
            decode = (time.process_time() - t0) / k * 1e3
            t0 = time.process_time()
            for image in images:
                processor.preprocess_images([image], aspect)
            preprocess = (time.process_time() - t0) / k * 1e3
            label = f"{mixer} ({processor.num_image_tokens})"
            lines.append(f"| {label} | {aspect} | whole `__getitem__` | {total:.2f} |")
            lines.append(f"| {label} | {aspect} | of which JPEG decode (`load_rgb_image`) | {decode:.2f} |")
            lines.append(f"| {label} | {aspect} | of which preprocessing to 336 px | {preprocess:.2f} |")
            lines.append(
                f"| {label} | {aspect} | of which read + tokenise + labels (rest) | {total - decode - preprocess:.2f} |"
            )
            log(lines[-4:])

    lines += [
        "",
        f"DataLoader wall-clock throughput (load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)",
        "",
        "| mixer | workers | batch | samples/s | samples/s per worker |",
        "|---|---|---|---|---|",
    ]
    processor = paper_processor(tokenizer, "interleave", 336)
    dataset = LlavaDataset(
        root / "data.json", processor, image_folder=root / "images", cache_dir=root / "cache"
    )
    collate = LlavaCollator(processor.pad_token_id)
    for n_workers in workers:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=16,
            shuffle=True,
            num_workers=n_workers,
            collate_fn=collate,
            worker_init_fn=lambda _: torch.set_num_threads(1),
            persistent_workers=False,
            prefetch_factor=4 if n_workers else None,
        )
        it = iter(loader)
        next(it)  # start-up (fork, first batch) not counted
        t0, n = time.perf_counter(), 0
        for batch in it:
            n += len(batch["input_ids"])
        rate = n / (time.perf_counter() - t0)
        lines.append(
            f"| interleave ({processor.num_image_tokens}) | {n_workers} | 16 | {rate:.0f} | {rate / max(n_workers, 1):.0f} |"
        )
        log(lines[-1])
    return lines


# -- padding ----------------------------------------------------------------------------------------
def synthetic_lengths(rng, n: int, visual_tokens: int, max_length: int = 2048):
    """Text tokens: image samples ~ lognormal around 180 (mostly 100-300, multi-turn VQA), 6% text-only
    ~ lognormal around 700 up to 2048 (ShareGPT). Image samples add the visual tokens; every sample is
    capped at max_length as the dataset would fit it."""
    has_image = rng.random(n) >= 0.06
    image_text = np.clip(rng.lognormal(np.log(180), 0.45, n), 30, 1500)
    text_only = np.clip(rng.lognormal(np.log(700), 0.7, n), 40, 2048)
    lengths = np.where(has_image, image_text + visual_tokens, text_only).astype(np.int64)
    return np.minimum(lengths, max_length), has_image


def padding_stats(order, lengths, batch, world, accum):
    """(mean padding per per-device batch, useful share of compute). Compute is modelled as padded
    tokens, with ranks synchronising every micro-step (ZeRO-2/3 reduce or gather every micro-step):
    a micro-step lasts as long as its largest per-device batch (batch x longest sample), on all ranks."""
    usable = len(order) - len(order) % (batch * world)
    batches = order[:usable].reshape(-1, batch)
    lens = lengths[batches]
    slots = lens.max(axis=1) * batch
    micro_steps = slots.reshape(-1, world)
    useful = lens.sum() / (micro_steps.max(axis=1).sum() * world)
    return float((1 - lens.sum(axis=1) / slots).mean()), float(useful)


def packed_stats(batches, lengths, world):
    """(0 padding, useful share of compute, steps) for packed micro-batches in global order: a
    micro-step lasts as long as its rank with the most tokens (cost linear in tokens, as above)."""
    tokens = np.array([lengths[b].sum() for b in batches]).reshape(-1, world)
    return 0.0, float(tokens.sum() / (tokens.max(axis=1).sum() * world))


def bench_padding(n: int) -> list[str]:
    from mof_llava.data.packing import packed_epoch
    from mof_llava.data.sampler import ModalityLengthGroupedSampler, ShuffledSampler

    lines = [
        f"Synthetic lengths, n = {n}, 6% text-only. Padding: mean over per-device batches of "
        "padding / (batch x longest sample). Useful compute: real tokens / (GPUs x sum over micro-steps of "
        "the micro-step's largest batch x longest), i.e. the share of GPU time spent on real tokens when ranks "
        "wait for each other every micro-step. Packed: no padding; a micro-step lasts as long as its rank with "
        "the most tokens.",
        "",
        "| visual tokens | per-device batch x GPUs x accum | sampler | padding per batch | useful compute | steps |",
        "|---|---|---|---|---|---|",
    ]
    for visual in paper_visual_tokens():
        lengths, has_image = synthetic_lengths(np.random.default_rng(0), n, visual)
        for batch, world, accum in ((16, 8, 1), (8, 8, 2), (4, 8, 4)):
            samplers = {
                "grouped, sorted (default)": ModalityLengthGroupedSampler(
                    lengths, has_image, batch, world, accum
                ),
                "grouped, balanced (LLaVA)": ModalityLengthGroupedSampler(
                    lengths, has_image, batch, world, accum, arrange="balanced"
                ),
                "shuffle": ShuffledSampler(n),
            }
            for name, sampler in samplers.items():
                order = np.fromiter(iter(sampler), dtype=np.int64, count=n)
                padding, useful = padding_stats(order, lengths, batch, world, accum)
                steps = -(-n // (batch * world * accum))  # the last, partial step included
                lines.append(
                    f"| {visual} | {batch} x {world} x {accum} | {name} | {100 * padding:.1f}% | {100 * useful:.1f}% "
                    f"| {steps} |"
                )
                log(lines[-1])
            for name, budget in (("packed, recipe samples per step", None), ("packed, token budget", batch * 2048)):
                batches = packed_epoch(lengths, has_image, world_size=world, grad_accum=accum,
                                       per_device_batch_size=batch, seed=0, epoch=0, max_tokens=budget)
                padding, useful = packed_stats(batches, lengths, world)
                label = name if budget is None else f"{name} {budget}"
                lines.append(
                    f"| {visual} | {batch} x {world} x {accum} | {label} | {100 * padding:.1f}% | {100 * useful:.1f}% "
                    f"| {len(batches) // (world * accum)} |"
                )
                log(lines[-1])
    p = np.percentile
    for visual in paper_visual_tokens():
        lengths, has_image = synthetic_lengths(np.random.default_rng(0), n, visual)
        lines.append("")
        lines.append(
            f"Lengths with {visual} visual tokens: image samples p10/p50/p90 = "
            f"{p(lengths[has_image], 10):.0f}/{p(lengths[has_image], 50):.0f}/{p(lengths[has_image], 90):.0f}, "
            f"text-only p10/p50/p90 = {p(lengths[~has_image], 10):.0f}/{p(lengths[~has_image], 50):.0f}/"
            f"{p(lengths[~has_image], 90):.0f}, at the 2048 cap: {100 * np.mean(lengths == 2048):.2f}%"
        )
    return lines


# -- scale ------------------------------------------------------------------------------------------
def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def length_cpu_per_record(records, processor, k: int) -> float:
    """CPU milliseconds per record of the length pass's work (read, validate, render, encode, label)."""
    from mof_llava.conversation import get_template
    from mof_llava.data.samples import tokenize_record

    template = get_template("vicuna_v1")
    t0 = time.process_time()
    for i in range(k):
        tokenize_record(records.record(i), template, processor, 2048)
    return (time.process_time() - t0) / k * 1e3


def bench_scale(root: Path, n: int, num_proc: int) -> list[str]:
    from mof_llava.data import LlavaDataset
    from mof_llava.data.check import paper_processor

    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "mix.json"
    t0 = time.perf_counter()
    with open(path, "w") as f:  # a JSON array like llava_v1_5_mix665k.json
        f.write("[\n")
        for i in range(n):
            image = None if rng.random() < 0.06 else f"coco/train2017/{i:012d}.jpg"
            f.write(("" if i == 0 else ",\n") + json.dumps(synthetic_record(rng, i, image), indent=1))
        f.write("\n]\n")
    size_mb = path.stat().st_size / 1e6
    log(f"wrote {n} records, {size_mb:.0f} MB in {time.perf_counter() - t0:.0f} s")
    processor = paper_processor(tiny_tokenizer_dir(root), "interleave", 336)

    from mof_llava.data.record_file import RecordFile

    t0 = time.perf_counter()
    records = RecordFile(path, root / "cache")
    index_s = time.perf_counter() - t0
    cpu_ms = length_cpu_per_record(records, processor, k=min(n, 20_000))
    t0 = time.perf_counter()
    LlavaDataset(path, processor, image_folder=root, cache_dir=root / "cache", num_proc=num_proc)
    lengths_s = time.perf_counter() - t0
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    dataset = LlavaDataset(path, processor, image_folder=root, cache_dir=root / "cache")
    open_s = time.perf_counter() - t0
    for i in np.random.default_rng(0).integers(0, len(dataset), 2000):
        dataset.records.raw(int(dataset.record_indices[i]))
    dataset_mb = rss_mb() - before
    del dataset
    gc.collect()
    before = rss_mb()
    with open(path) as f:
        loaded = json.load(f)
    json_mb = rss_mb() - before
    del loaded
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return [
        f"Synthetic JSON array: {n} records, {size_mb:.0f} MB (94% image VQA, 6% text-only).",
        "",
        "| step | time | memory |",
        "|---|---|---|",
        f"| build the byte-offset index (one pass, validates every record) | {index_s:.1f} s | - |",
        f"| one-time token-length pass, {num_proc} processes, I-MoF ({processor.num_image_tokens}) "
        f"| {lengths_s:.1f} s | - |",
        f"| of which CPU per record (1 process, {min(n, 20_000)} records) | {cpu_ms:.2f} ms | - |",
        f"| open the dataset from the cache | {open_s * 1e3:.0f} ms | +{dataset_mb:.0f} MB RSS after 2000 random reads |",
        f"| `json.load` of the same file (what LLaVA does in every rank) | - | +{json_mb:.0f} MB RSS |",
        "",
        f"Peak RSS of the benchmark process: {peak:.0f} MB.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["throughput", "padding", "scale", "all"], default="all")
    parser.add_argument("--images", type=int, default=64, help="distinct JPEGs for the throughput part")
    parser.add_argument("--samples", type=int, default=800, help="samples per throughput run")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--padding-samples", type=int, default=665_298)
    parser.add_argument("--scale-records", type=int, default=665_298)
    parser.add_argument("--num-proc", type=int, default=os.cpu_count())
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = [f"Machine: {machine()}", ""]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.part in ("throughput", "all"):
            out += (
                ["### Throughput", ""]
                + bench_throughput(root / "tp", args.images, args.samples, args.workers)
                + [""]
            )
        if args.part in ("padding", "all"):
            out += ["### Padding", ""] + bench_padding(args.padding_samples) + [""]
        if args.part in ("scale", "all"):
            out += ["### Scale", ""] + bench_scale(root / "scale", args.scale_records, args.num_proc) + [""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
