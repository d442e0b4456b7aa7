"""Find the numbers a chapter's prose states, and the numbers its cells computed or set.

A chapter may write a number in its markdown only if one of these holds:

1. the notebook's stored text outputs contain it at the prose's rounding (prose ``0.83`` matches a printed
   ``0.8318``; ``49 %`` matches ``49.1%`` or ``0.491``; ``1.2×10⁷`` or ``1.2e7`` matches ``12,044,000`` or
   ``1.2e+07``);
2. the notebook's code cells contain it (a setup constant such as ``EPOCHS = 10`` or ``lr=0.9``);
3. it is quoted from a cited source, inside ``<cite>…</cite>`` that names the source
   (``<cite>d2l reports 0.79–0.80</cite>``, ``<cite>chapter 5</cite>``);
4. it is not a measurement: inside ``$math$`` or ``inline code``, in a link, a heading's or a list's numbering,
   right after Chapter/Section/§/Figure/Table/Algorithm/Eq./Exercise/seed, a year (1950-2030), an integer from
   0 to 12, a bare power of ten (``10⁻³``), or glued to letters (``L1``, ``fc2``, ``float32``, ``2nd``).

So a result that no cell printed cannot sit in the prose, and a number a cell printed cannot be quoted at a
rounding its output does not support.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")

# A number: mantissa (thousands separators allowed), optional decimals, optional exponent written as
# e-3, ×10^-3, ×10⁻³ or ·10^{-3}.
_NUMBER = re.compile(
    r"(?P<mant>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?"
    r"(?:(?P<e>[eE][−+\-]?\d+)"
    r"|\s?[×x·*]\s?10(?:\^\{?(?P<pow>[−+\-]?\d+)\}?|(?P<sup>[⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)))?"
)

_REFERENCE_WORDS = (
    r"(?:chapters?|sections?|§|figures?|fig\.|tables?|algorithms?|eqs?\.|equations?|exercises?|seeds?|"
    r"cells?|parts?|panels?|steps? of chapter|notebooks?|issues?)"
)
_REFERENCE = re.compile(_REFERENCE_WORDS + r"\s*\d+(?:\.\d+)*(?:\s*(?:[–\-,/]|and|or|to)\s*\d+(?:\.\d+)*)*",
                        re.IGNORECASE)
_GLUED_OK = {"x", "s", "ms", "min", "h"}      # units a number may carry: 20x, 75s, 3.5 min


@dataclass(frozen=True)
class ProseNumber:
    """A number found in markdown: its value, how many decimals it was written with, and where."""
    text: str
    value: float
    decimals: int
    exponent: int          # the power of ten it was written with (0 if none)
    percent: bool
    cell: int
    context: str


def _strip_markdown(md: str) -> str:
    """Remove everything whose numbers are exempt (rule 3 and 4), keeping the rest of the text in place."""
    md = re.sub(r"<cite>.*?</cite>", " ", md, flags=re.DOTALL | re.IGNORECASE)
    md = re.sub(r"<!--.*?-->", " ", md, flags=re.DOTALL)
    md = re.sub(r"```.*?```", " ", md, flags=re.DOTALL)
    md = re.sub(r"`[^`]*`", " ", md)
    md = re.sub(r"\$\$.*?\$\$", " ", md, flags=re.DOTALL)
    md = re.sub(r"(?<!\\)\$.*?(?<!\\)\$", " ", md, flags=re.DOTALL)
    md = re.sub(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", " ", md, flags=re.DOTALL)
    md = re.sub(r"!?\[[^\]]*\]\([^)]*\)", " ", md)          # links and images: citations, not claims
    md = re.sub(r"https?://\S+", " ", md)
    md = re.sub(r"<[^>]+>", " ", md)                          # other HTML tags (attributes hold sizes)
    md = re.sub(r"^(\s*#+\s*)(?:§?\d+(?:\.\d+)*[.)]?\s)", r"\1", md, flags=re.MULTILINE)   # heading numbers
    md = re.sub(r"^(\s*)\d+[.)]\s", r"\1", md, flags=re.MULTILINE)                         # list numbers
    md = re.sub(r"^(\s*[*\-]\s*\*{0,2})\d+[.)]\s", r"\1", md, flags=re.MULTILINE)           # "* 1. item"
    md = _REFERENCE.sub(" ", md)
    return md


def _parse(match: re.Match) -> tuple[float, int, int]:
    """(value, decimals of the mantissa, power of ten) of a regex match of _NUMBER."""
    mant = float(match["mant"].replace(",", "") + (match["frac"] or ""))
    decimals = len(match["frac"]) - 1 if match["frac"] else 0
    exp = 0
    if match["e"]:
        exp = int(match["e"][1:].replace("−", "-"))
    elif match["pow"]:
        exp = int(match["pow"].replace("−", "-"))
    elif match["sup"]:
        exp = int(match["sup"].translate(_SUPERSCRIPT))
    return mant * 10.0 ** exp, decimals, exp


def prose_numbers(md: str, cell: int = 0) -> list[ProseNumber]:
    """The numbers in one markdown cell that must be traced to an output or to code."""
    text = _strip_markdown(md)
    found = []
    for m in _NUMBER.finditer(text):
        before = text[max(0, m.start() - 1):m.start()]
        after = text[m.end():m.end() + 8]
        if before and (before.isalpha() or before in "_.^/\\"):
            continue                                           # L1, fc2, x_2, 1.2.3, 2^10, 1/4
        glued = re.match(r"[A-Za-z_]+", after)
        if glued and glued.group(0) not in _GLUED_OK:
            continue                                           # float32, 2nd, 10k, 3D
        value, decimals, exp = _parse(m)
        is_power_of_ten = m["mant"] == "10" and not m["frac"] and re.match(r"\s?(\^|[⁻⁺⁰¹²³⁴⁵⁶⁷⁸⁹])", after)
        if is_power_of_ten:
            continue                                           # 10⁻³: an order of magnitude, not a result
        if exp == 0 and decimals == 0:
            if value <= 12 or 1950 <= value <= 2030:
                continue
        percent = bool(re.match(r"\s?%", after))
        context = text[max(0, m.start() - 40):m.end() + 20].replace("\n", " ")
        found.append(ProseNumber(m.group(0), value, decimals, exp, percent, cell, context.strip()))
    return found


def printed_numbers(text: str) -> list[float]:
    """Every number in a piece of output or code, as a float (signs dropped)."""
    values = []
    for m in _NUMBER.finditer(text):
        try:
            values.append(_parse(m)[0])
        except (OverflowError, ValueError):
            continue
    return values


def _rounds_to(v: float, p: ProseNumber) -> bool:
    """Does ``v``, rounded as the prose rounds, give the prose's number? An integer's trailing zeros count
    as rounding: "about 8,600" is 8557 rounded to hundreds."""
    scale = 10.0 ** p.exponent
    digits = p.decimals
    mantissa = p.value / scale
    if digits == 0 and mantissa >= 10 and mantissa.is_integer():
        digits = -(len(str(int(mantissa))) - len(str(int(mantissa)).rstrip("0")))
    target = round(mantissa, digits)
    return math.isclose(round(v / scale, digits), target, rel_tol=1e-9, abs_tol=1e-12)


def supported(p: ProseNumber, values: list[float]) -> bool:
    """True if some printed or coded value, rounded as the prose rounds, gives the prose's number."""
    for v in values:
        if _rounds_to(v, p):
            return True
        if p.percent and _rounds_to(100 * v, p):
            return True
    return False


def _output_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append("".join(out["text"]))
        data = out.get("data", {})
        for key in ("text/plain", "text/markdown", "text/html", "text/latex"):
            if key in data:
                value = data[key]
                parts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


def unsupported_numbers(notebook: Path) -> list[ProseNumber]:
    """The prose numbers of one notebook that no output, code cell or citation supports."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    cells = nb["cells"]
    evidence: list[float] = []
    for cell in cells:
        if cell["cell_type"] == "code":
            evidence += printed_numbers(_output_text(cell))
            evidence += printed_numbers("".join(cell["source"]))
    missing = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        for p in prose_numbers("".join(cell["source"]), cell=i):
            if not supported(p, evidence):
                missing.append(p)
    return missing
