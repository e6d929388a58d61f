"""The skip tally counts samples, not the times they were skipped: a sample that comes up in two
epochs, twice in one batch, or on two ranks (a padded distributed sampler) counts once."""

from __future__ import annotations

from mof_llava.data.skips import SkippedSample, SkipTally


def gone(index: int, kind: str = "bad_image") -> SkippedSample:
    return SkippedSample(
        index, f"d.json:{index + 2} (record {index})", f"image {index}.jpg: file not found", kind
    )


def test_a_sample_skipped_again_counts_once():
    tally = SkipTally()
    tally.add([gone(3), gone(3)])  # twice in one batch
    tally.add([gone(3), gone(5)])  # and again the next epoch
    tally.add([gone(9, "nothing_supervised")])
    assert tally.total == 3 and tally.occurrences == 5
    assert tally.counts == {"bad_image": 2, "nothing_supervised": 1}
    assert [s.index for s in tally.examples] == [3, 5, 9]
    assert tally.summary().splitlines() == [
        "3 sample(s) skipped (2 bad_image, 1 nothing_supervised), 5 times in all; first ones:",
        "  d.json:5 (record 3): image 3.jpg: file not found",
        "  d.json:7 (record 5): image 5.jpg: file not found",
        "  d.json:11 (record 9): image 9.jpg: file not found",
    ]


def test_once_each_says_no_more():
    tally = SkipTally()
    tally.add([gone(1), gone(2)])
    assert tally.summary().splitlines()[0] == "2 sample(s) skipped (2 bad_image); first ones:"


def test_ranks_merge_without_double_counting():
    rank0, rank1 = SkipTally(keep=2), SkipTally(keep=2)
    rank0.add([gone(0), gone(4), gone(8)])
    rank1.add([gone(1), gone(8)])  # the padded shard hands sample 8 to both ranks
    merged = SkipTally.merged([rank0, rank1])
    assert merged.total == 4 and merged.occurrences == 5
    assert sorted(merged.kinds) == [0, 1, 4, 8]
    assert len(merged.examples) == 2  # the kept examples stay bounded
    assert SkipTally.merged([SkipTally(), SkipTally()]).summary() == "no samples skipped"
