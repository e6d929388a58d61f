"""The lab's probes, on tokens built so the answer is known: a class carried by one token that can
sit anywhere is out of a linear probe's reach but within the attentive reader's."""

from __future__ import annotations

import math

import pytest
import torch

from mof_llava.lab import measure, report

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PATCHES, DIM = 16, 4


def _detail_tokens(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [n, PATCHES, DIM]: feature 0 marks the one "detail" token (1 there, 0 elsewhere), which
    holds the class as feature 1 = +1 or -1; every other token's feature 1 is N(0, 1) noise, the
    rest is noise too. Reading the class needs "feature 1 where feature 0 is set", a product: the
    best linear rule sums feature 1 over the tokens, the sign of +-1 + N(0, 15), right
    Phi(1/sqrt(15)) = 60% of the time."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, PATCHES, DIM, generator=g)
    x[:, :, 0] = 0.0
    where = torch.randint(0, PATCHES, (n,), generator=g)
    rows = torch.arange(n)
    x[rows, where, 0] = 1.0
    x[rows, where, 1] = y.float() * 2 - 1
    return x, y


def test_the_reader_reads_a_detail_that_can_sit_anywhere_and_a_linear_probe_cannot():
    train_x, train_y = _detail_tokens(600, seed=0)
    test_x, test_y = _detail_tokens(400, seed=1)
    linear_best = 0.5 * (1 + math.erf(1 / math.sqrt(15) / math.sqrt(2)))
    linear = measure.linear_probe(train_x.flatten(1), train_y, test_x.flatten(1), test_y)
    reader = measure.attentive_probe(train_x, train_y, test_x, test_y)
    # 400 test rows: a binomial 3-sigma band around 60% is +-7.5 points.
    assert linear < linear_best + 0.075
    assert reader > 0.95
    # Seeded: the same call gives the same number, whatever the global RNG did in between.
    torch.manual_seed(123)
    assert measure.attentive_probe(train_x, train_y, test_x, test_y) == reader


def test_the_reader_cannot_read_a_class_the_tokens_do_not_hold():
    train_x, _ = _detail_tokens(600, seed=0)
    test_x, _ = _detail_tokens(400, seed=1)
    g = torch.Generator().manual_seed(2)
    train_y, test_y = torch.randint(0, 2, (600,), generator=g), torch.randint(0, 2, (400,), generator=g)
    assert abs(measure.attentive_probe(train_x, train_y, test_x, test_y) - 0.5) < 0.075


def test_the_report_has_a_reader_table_only_when_every_result_has_the_probe():
    attributes = report.world.ATTRIBUTES

    def result(reader: float | None) -> dict:
        probe = {f: {a: 0.5 for a in attributes} for f in measure.FEATURES}
        if reader is not None:
            probe["reader"] = {a: reader for a in attributes}
        tower = {"distance": {f: {a: 0.1 for a in attributes} for f in measure.FEATURES}, "probe": probe}
        return {"clip": tower, "ssl": tower, "chance": {a: 0.25 for a in attributes}}

    text = report.report([result(0.7), result(0.9)])
    reader = text.split("### Attentive-reader accuracy (%), patch tokens\n\n")[1]
    assert f"| {attributes[0]} | " in reader and "| 80 ± 10 | 80 ± 10 | 25 ± 0 |" in reader
    assert "Attentive-reader" not in report.report([result(0.7), result(None)])


def test_a_negative_reader_step_count_is_refused():
    with pytest.raises(ValueError, match=r"reader_steps -1: a number of steps, 0 or more"):
        measure.MeasureConfig(reader_steps=-1)
