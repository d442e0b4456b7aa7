"""Every number in a chapter's prose is computed by that chapter, set in its code, or quoted from a cited source.

The rules are in ``prose_numbers.py``'s docstring. A hard-coded "0.834" where the cell printed a mean of
0.832 fails here, with the cell and the sentence it sits in.
"""
import json
from pathlib import Path

import pytest

from prose_numbers import printed_numbers, prose_numbers, supported, unsupported_numbers

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_prose_number_is_printed_coded_or_cited(notebook):
    missing = unsupported_numbers(notebook)
    lines = [f"  cell {p.cell}: {p.text!r} in '…{p.context}…'" for p in missing]
    assert not missing, (
        f"{notebook.name}: {len(missing)} number(s) in the prose appear in no output (at the prose's rounding) "
        "and no code cell; print them from a cell, or wrap a quoted number in <cite>source …</cite>:\n"
        + "\n".join(lines))


# The matcher itself, on made-up text: each rule can both pass and fail.

def _supported(prose: str, printed: str) -> list[bool]:
    return [supported(p, printed_numbers(printed)) for p in prose_numbers(prose)]


def test_rounding_a_printed_mean():
    assert _supported("mean test accuracy 0.832", "mean 0.8318") == [True]
    assert _supported("mean test accuracy 0.834", "mean 0.8318") == [False]
    assert _supported("about 0.83", "mean 0.8318") == [True]
    assert _supported("about 0.84", "mean 0.8318") == [False]


def test_percent_matches_a_fraction_or_a_percentage():
    assert _supported("49 % are saturated", "saturated: 0.491") == [True]
    assert _supported("49 % are saturated", "saturated: 49.1%") == [True]
    assert _supported("60 % are saturated", "saturated: 0.491") == [False]


def test_scientific_notation_and_thousands():
    assert _supported("spanning 1.2×10⁷", "ratio 12,044,000") == [True]
    assert _supported("spanning 1.2e7", "ratio 1.2e+07") == [True]
    assert _supported("spanning 1.2×10^7", "ratio 9.9e+06") == [False]
    assert _supported("all 60,000 images", "60000 training images") == [True]
    assert _supported("all 60,000 images", "6000 training images") == [False]
    assert _supported("about 8,600 steps", "8557 steps") == [True]
    assert _supported("about 8,600 steps", "8457 steps") == [False]


def test_exemptions():
    exempt = ("chapter 25 and §4.1, Figure 17, seed 003, in 2015, $x^{0.5}$, `lr=0.37`, 10⁻³, fc120, float32, "
              "the 2nd try, <cite>d2l reports 0.79</cite>, [arXiv 1502.03167](https://arxiv.org/abs/1502.03167)")
    assert prose_numbers(exempt) == []
    assert [p.text for p in prose_numbers("## 6. Results\n1. first with 0.25 and 20x fewer steps")] == ["0.25", "20"]


def test_a_hard_coded_number_in_a_notebook_is_found(tmp_path):
    nb = {"cells": [
        {"cell_type": "code", "source": "EPOCHS = 15\nprint(round(acc, 4))",
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "0.8318\n"}]},
        {"cell_type": "markdown", "source": "After 15 epochs the mean is 0.832, not 0.834 (d2l: <cite>0.79</cite>)."},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    assert [p.text for p in unsupported_numbers(path)] == ["0.834"]
