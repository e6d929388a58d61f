"""CLIP-blind pair mining (the way the MMVP benchmark was built).

api.py               the four steps as one call each (embed, pairs, sheet, export), typed jobs
embed.py/towers.py   images -> float16 L2-normalised embeddings per tower, sharded and resumable
search.py/ivf.py     every pair of rows with cosine >= t, exact or clustered, in bounded memory
pairs.py             CLIP cos >= clip_min and DINOv2 cos <= dino_max, counted exclusions, CSV
sheet.py             contact sheet of the top pairs for review
export.py            the first K pairs as an MMVP-format benchmark folder
store.py             reading .npy matrices and the embed output folder
errors.py            MiningError: bad input, reported in one line by the command line
synthetic.py         synthetic collections with planted pairs (tests, benchmarks)

User guide: docs/mining.md.
"""
