"""Procedural pictures of coloured shapes, with every attribute known: the one scene generator.

    drawing   palette, shapes, `Thing` and `paint`: how every picture is drawn
    lab       the toy lab's world: 48 px scenes, nine attributes, pairs differing in one of them
    canvas    scenes of varied sizes and aspect ratios (the data pipeline's resize, pad and crop
              paths), pairs differing in one attribute, and `picture(seed)` for benchmark folders
    questions questions about lab scenes answered from their metadata, and the LLaVA-format
              records built from them

Each scene type has `render()`, `to_json()` (its metadata) and `from_json()`, and is drawn from a
generator seeded by (seed, stream, index), so every picture is a function of its seed.
The demo's data (`mof_llava.demo.synthetic`), the toy lab (`mof_llava.lab`) and the benchmark
folder writers (`mof_llava.benchmarks.synthetic`) draw through it.
"""
