"""Grounding: checkable claims in a hypothesis, compared with the measured evidence.

``check_answer(dimensions, description, evidence, class_names) -> list[Claim]``
    Extract claims from every dimension's text and summary (and the description),
    compare each with the evidence dict (a row of the ``evidence`` table; JSON columns
    as dicts or JSON text) and return them with verdict 'consistent' | 'contradicted' |
    'unverifiable' and the fact it was checked against.

``format_facts(evidence, class_names) -> str`` (in :mod:`lens.grounding.facts`)
    The measured facts as plain lines for prompts that include ``{evidence}``.

Claims found (regular expressions; a claim preceded by a negation such as "not", "no",
"without" within three words (and NEGATION_CHARS characters) is not extracted):

=====================  ==========================================  ===================================
kind                   examples                                    checked against
=====================  ==========================================  ===================================
background_colour      "blue background", "background is green"    border colour shares
foreground_colour      "a red car", "the object is brown"          centre colour shares
dark                   "dark", "dim", "poorly lit", "underexposed" brightness (+ z vs true class)
bright                 "overexposed", "washed out", "very bright"  brightness
low_contrast           "low contrast", "poor contrast"             contrast (+ z)
blurry                 "blurry", "out of focus", "fuzzy"           sharpness z vs true class
cropped                "cropped", "cut off", "partially visible"   edge share / sharpness z
looks_like             "looks like a cat", "resembles a dog"       nearest training images
tag                    a dimension's tag (``annotation_issue``,    label_error_score / ambiguity_score
                       ``ambiguous_image``, ``model_error``)       and their signals (:func:`check_tag`)
=====================  ==========================================  ===================================

Verdict rules (thresholds from :mod:`lens.measure`, and the contradiction bounds below):

* colours: the claimed term (synonyms mapped: gray->grey, tan/beige->brown, violet->purple,
  cyan/turquoise/navy->blue, gold->yellow, ...) covers >= COLOUR_CONSISTENT_SHARE of the
  region's pixels -> consistent; < COLOUR_CONTRADICTED_SHARE -> contradicted; else
  unverifiable. "Uniform <colour> background" additionally needs the term to be the
  dominant one to be consistent.
* dark: brightness < DARK_BRIGHTNESS or z <= -TYPICAL_Z -> consistent; brightness >=
  NOT_DARK_BRIGHTNESS and z > 0 (or no z) -> contradicted. bright: brightness >
  BRIGHT_BRIGHTNESS or z >= UNUSUAL_Z -> consistent; brightness < NOT_BRIGHT_BRIGHTNESS ->
  contradicted.
* low contrast: contrast < LOW_CONTRAST or z <= -TYPICAL_Z -> consistent; contrast >=
  NOT_LOW_CONTRAST and z > 0 (or no z) -> contradicted.
* blurry: sharpness z <= -TYPICAL_Z -> consistent; z >= +TYPICAL_Z -> contradicted.
* cropped: edge share z >= TYPICAL_Z or sharpness z <= -UNUSUAL_Z (upscaled) ->
  consistent; never contradicted (a crop cannot be ruled out by these measurements).
* looks like <class>: the predicted class, or >= LOOKS_LIKE_SHARE of the nearest training
  images carry it -> consistent; none of them does and it is not the prediction ->
  contradicted; without neighbours -> unverifiable.

Anything else is unverifiable: the check never guesses a fact it did not measure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lens import diagnosis, measure
from lens.grounding.facts import _json, _list, _num, _shares_text, _z, format_facts

VERDICTS = ("consistent", "contradicted", "unverifiable")

#: "dark" is contradicted at or above this brightness (and z > 0, or no z): clearly not dark
NOT_DARK_BRIGHTNESS = 0.45
#: "bright / overexposed" is contradicted below this brightness
NOT_BRIGHT_BRIGHTNESS = 0.5
#: "low contrast" is contradicted at or above this contrast (std of luma; and z > 0, or no z)
NOT_LOW_CONTRAST = 0.18
#: characters before a claim searched for a negation ("not", "no", "without", ...)
NEGATION_CHARS = 40


@dataclass(frozen=True)
class Claim:
    dimension: str  # a prompt dimension, or 'description'
    claim_index: int
    kind: str
    claim: str
    verdict: str
    fact: str | None = None


# -- claim extraction ---------------------------------------------------------------------------

COLOUR_SYNONYMS = {
    **{t: t for t in measure.COLOUR_TERMS},
    "gray": "grey", "silver": "grey", "tan": "brown", "beige": "brown", "khaki": "brown", "violet": "purple",
    "lilac": "purple", "magenta": "pink", "cyan": "blue", "turquoise": "blue", "navy": "blue", "teal": "blue",
    "azure": "blue", "gold": "yellow", "golden": "yellow", "crimson": "red", "maroon": "red",
}
_COLOUR_WORDS = "|".join(sorted(COLOUR_SYNONYMS, key=len, reverse=True))
_COLOUR = r"(?P<colour>" + _COLOUR_WORDS + r")(?:ish)?"
_BG = r"(?:background|backdrop|sky|surroundings|setting|scene behind)"
_FG_NOUNS = r"(?:object|subject|foreground|animal|vehicle|body|fur|feathers|coat|car|truck|ship|boat|plane|bird|cat|dog|horse|deer|frog)"
_NEG = re.compile(r"\b(?:not|no|without|never|isn't|aren't|wasn't|nor|lacks?)\b(?:\W+\w+){0,2}\W*$", re.I)

_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("background_colour", re.compile(rf"\b(?P<uniform>uniform(?:ly)?\s+|plain\s+|solid\s+)?{_COLOUR}(?:[\s-]+\w+)?\s+{_BG}\b", re.I)),
    ("background_colour", re.compile(rf"\b{_BG}\s+(?:is|was|appears|seems|looks)\s+(?:mostly\s+|mainly\s+|predominantly\s+|largely\s+)?(?P<uniform>uniform(?:ly)?\s+)?{_COLOUR}\b", re.I)),
    ("foreground_colour", re.compile(rf"\b{_COLOUR}\s+(?P<noun>{_FG_NOUNS})\b", re.I)),
    ("foreground_colour", re.compile(rf"\b(?:object|subject|foreground|animal)\s+(?:is|was|appears)\s+(?:mostly\s+|mainly\s+)?{_COLOUR}\b", re.I)),
    ("dark", re.compile(r"\b(?:(?:very|too|quite|rather)\s+)?(?:dark(?:ly lit)?|dim(?:ly lit)?|poorly[\s-]lit|underexposed|low[\s-]light)\b(?!\s+(?:" + _COLOUR_WORDS + r"|background|fur|coat|colou?r|object|animal|spots?|patch))", re.I)),
    ("bright", re.compile(r"\b(?:overexposed|washed[\s-]out|(?:very|too|overly)\s+bright)\b", re.I)),
    ("low_contrast", re.compile(r"\b(?:low|poor|weak|little)[\s-]contrast\b", re.I)),
    ("blurry", re.compile(r"\b(?:blurry|blurred|blur|out[\s-]of[\s-]focus|fuzzy|unsharp)\b", re.I)),
    ("cropped", re.compile(r"\b(?:cropped|cut[\s-]off|partially\s+visible|partial\s+view|only\s+part\s+of|truncated)\b", re.I)),
]


def _looks_like_pattern(class_names: list[str]) -> re.Pattern | None:
    if not class_names:
        return None
    names = "|".join(re.escape(c) for c in sorted(class_names, key=len, reverse=True))
    return re.compile(
        rf"\b(?:looks?\s+(?:more\s+)?like|resembl(?:es?|ing)|similar\s+to|mistaken\s+for|could\s+(?:pass|be)\s+(?:for|as)?)"
        rf"\s+(?:an?\s+|the\s+)?(?P<cls>{names})s?\b",
        re.I,
    )


def extract_claims(text: str, class_names: list[str]) -> list[tuple[str, str, dict]]:
    """Checkable claims in ``text`` as (kind, span, details), in text order, overlaps dropped."""
    found: list[tuple[int, int, str, dict]] = []
    pats = list(_PATTERNS)
    ll = _looks_like_pattern(class_names)
    if ll is not None:
        pats.append(("looks_like", ll))
        names = "|".join(re.escape(c) for c in sorted(class_names, key=len, reverse=True))
        pats.append(("foreground_colour", re.compile(rf"\b{_COLOUR}\s+(?P<noun>{names})s?\b", re.I)))
    for kind, pat in pats:
        for m in pat.finditer(text):
            if _NEG.search(text[max(0, m.start() - NEGATION_CHARS) : m.start()]):
                continue
            d = {k: v for k, v in m.groupdict().items() if v}
            found.append((m.start(), m.end(), kind, d))
    found.sort(key=lambda t: (t[0], -(t[1] - t[0])))
    out, last_end = [], -1
    for s, e, kind, d in found:
        if s < last_end:
            continue
        out.append((kind, text[s:e], d))
        last_end = e
    return out


# -- checks -------------------------------------------------------------------------------------


def _check_colour(region: str, d: dict, ev: Mapping[str, Any]) -> tuple[str, str | None]:
    term = COLOUR_SYNONYMS.get(d.get("colour", "").lower())
    shares = _json(ev.get(f"{region}_colours"))
    dominant = ev.get(f"{region}_colour")
    if not shares and not dominant:
        return "unverifiable", None
    label = "border (background proxy)" if region == "border" else "centre (foreground proxy)"
    fact = f"{label}: " + (_shares_text(shares) if shares else f"mostly {dominant}")
    if not shares:
        return ("consistent" if term == dominant else "unverifiable"), fact
    share = float(shares.get(term, 0.0))
    if share < measure.COLOUR_CONTRADICTED_SHARE:
        return "contradicted", fact
    if d.get("uniform") and term != dominant:
        return "contradicted", fact
    if share >= measure.COLOUR_CONSISTENT_SHARE:
        return "consistent", fact
    return "unverifiable", fact


def _check(kind: str, d: dict, ev: Mapping[str, Any], class_names: list[str]) -> tuple[str, str | None]:
    if kind == "background_colour":
        return _check_colour("border", d, ev)
    if kind == "foreground_colour":
        return _check_colour("centre", d, ev)
    if kind in ("dark", "bright"):
        b, z = _num(ev.get("brightness")), _z(ev, "true", "brightness")
        if b is None:
            return "unverifiable", None
        fact = f"brightness {b:.2f}" + (f" (z={z:+.1f} vs true class)" if z is not None else "")
        if kind == "dark":
            if b < measure.DARK_BRIGHTNESS or (z is not None and z <= -measure.TYPICAL_Z):
                return "consistent", fact
            if b >= NOT_DARK_BRIGHTNESS and (z is None or z > 0):
                return "contradicted", fact
        else:
            if b > measure.BRIGHT_BRIGHTNESS or (z is not None and z >= measure.UNUSUAL_Z):
                return "consistent", fact
            if b < NOT_BRIGHT_BRIGHTNESS:
                return "contradicted", fact
        return "unverifiable", fact
    if kind == "low_contrast":
        c, z = _num(ev.get("contrast")), _z(ev, "true", "contrast")
        if c is None:
            return "unverifiable", None
        fact = f"contrast {c:.3f}" + (f" (z={z:+.1f} vs true class)" if z is not None else "")
        if c < measure.LOW_CONTRAST or (z is not None and z <= -measure.TYPICAL_Z):
            return "consistent", fact
        if c >= NOT_LOW_CONTRAST and (z is None or z > 0):
            return "contradicted", fact
        return "unverifiable", fact
    if kind == "blurry":
        z = _z(ev, "true", "sharpness")
        s = _num(ev.get("sharpness"))
        if z is None:
            return "unverifiable", None if s is None else f"sharpness {s:.2f} (no class statistics)"
        fact = f"sharpness {s:.2f} (z={z:+.1f} vs true class)"
        if z <= -measure.TYPICAL_Z:
            return "consistent", fact
        if z >= measure.TYPICAL_Z:
            return "contradicted", fact
        return "unverifiable", fact
    if kind == "cropped":
        ze, zs = _z(ev, "true", "edge_share"), _z(ev, "true", "sharpness")
        if ze is None and zs is None:
            return "unverifiable", None
        fact = ", ".join(
            x for x in (
                f"edge share z={ze:+.1f}" if ze is not None else "",
                f"sharpness z={zs:+.1f}" if zs is not None else "",
            ) if x
        )
        if (ze is not None and ze >= measure.TYPICAL_Z) or (zs is not None and zs <= -measure.UNUSUAL_Z):
            return "consistent", fact
        return "unverifiable", fact
    if kind == "looks_like":
        name = d.get("cls", "")
        lookup = {c.lower(): i for i, c in enumerate(class_names)}
        cid = lookup.get(name.lower())
        if cid is None:
            return "unverifiable", None
        pred = ev.get("pred")
        nl = _list(ev.get("neighbour_labels"))
        is_pred = pred is not None and int(pred) == cid
        if not nl:
            return ("consistent", f"the model predicted {class_names[cid]}") if is_pred else ("unverifiable", None)
        share = sum(1 for c in nl if int(c) == cid) / len(nl)
        fact = f"{round(share * len(nl))} of {len(nl)} nearest training images labelled {class_names[cid]}" + (
            "; the model predicted it" if is_pred else ""
        )
        if is_pred or share >= measure.LOOKS_LIKE_SHARE:
            return "consistent", fact
        if share == 0:
            return "contradicted", fact
        return "unverifiable", fact
    return "unverifiable", None


# -- tag checks ---------------------------------------------------------------------------------

#: the data_quality tags the tag check knows (others are unverifiable)
CHECKED_TAGS = ("annotation_issue", "ambiguous_image", "model_error")


def _given_support(ev: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(given-label probability, share of nearest training images carrying the given label)."""
    return _num(ev.get("true_prob")), _num(ev.get("neighbour_true_share"))


def _scores_fact(ev: Mapping[str, Any]) -> str:
    parts = []
    le, am = _num(ev.get("label_error_score")), _num(ev.get("ambiguity_score"))
    if le is not None:
        parts.append(f"label_error_score {le:.2f} (tag at {diagnosis.LABEL_ERROR_THRESHOLD:.2f})")
    if am is not None:
        parts.append(f"ambiguity_score {am:.2f} (tag at {diagnosis.AMBIGUITY_THRESHOLD:.2f})")
    gp, ns = _given_support(ev)
    if gp is not None:
        parts.append(f"p(given label) {gp:.3f}")
    if ns is not None:
        parts.append(f"{ns:.0%} of nearest training images carry the given label")
    m = _num(ev.get("margin"))
    if m is not None:
        parts.append(f"margin {m:.2f}")
    return "; ".join(parts)


def check_tag(tag: str | None, evidence: Mapping[str, Any] | None) -> tuple[str, str | None]:
    """Check a ``data_quality`` tag against the diagnosis scores and the signals behind them.

    ``annotation_issue``: consistent when label_error_score >= LABEL_ERROR_THRESHOLD;
    contradicted when the score is below CONTRADICT_LABEL_ERROR and the given label is
    supported (its probability >= SUPPORTED_GIVEN_PROB or >= SUPPORTED_NEIGHBOUR_SHARE of the
    nearest training images carry it). ``ambiguous_image``: consistent when ambiguity_score >=
    AMBIGUITY_THRESHOLD; contradicted when it is below CONTRADICT_AMBIGUITY and the model is
    confident (margin >= CONFIDENT_MARGIN). ``model_error``: contradicted when the label-error
    score reaches its threshold (the label, not the model, looks wrong); consistent when neither
    score reaches its threshold. Anything else, or without scores: unverifiable.
    (Thresholds: :mod:`lens.diagnosis`.)

    Returns
    -------
    (verdict, fact) : verdict in :data:`VERDICTS`; fact names the measured values (None if none)
    """
    ev = evidence or {}
    le, am = _num(ev.get("label_error_score")), _num(ev.get("ambiguity_score"))
    if tag not in CHECKED_TAGS or (le is None and am is None):
        return "unverifiable", (_scores_fact(ev) or None)
    fact = _scores_fact(ev)
    if tag == "annotation_issue":
        if le is None:
            return "unverifiable", fact
        if le >= diagnosis.LABEL_ERROR_THRESHOLD:
            return "consistent", fact
        gp, ns = _given_support(ev)
        supported = (gp is not None and gp >= diagnosis.SUPPORTED_GIVEN_PROB) or (
            ns is not None and ns >= diagnosis.SUPPORTED_NEIGHBOUR_SHARE)
        if le < diagnosis.CONTRADICT_LABEL_ERROR and supported:
            return "contradicted", fact
        return "unverifiable", fact
    if tag == "ambiguous_image":
        if am is None:
            return "unverifiable", fact
        if am >= diagnosis.AMBIGUITY_THRESHOLD:
            return "consistent", fact
        m = _num(ev.get("margin"))
        if am < diagnosis.CONTRADICT_AMBIGUITY and m is not None and m >= diagnosis.CONFIDENT_MARGIN:
            return "contradicted", fact
        return "unverifiable", fact
    # model_error
    if le is not None and le >= diagnosis.LABEL_ERROR_THRESHOLD:
        return "contradicted", fact
    if (le is None or le < diagnosis.LABEL_ERROR_THRESHOLD) and (am is None or am < diagnosis.AMBIGUITY_THRESHOLD):
        return "consistent", fact
    return "unverifiable", fact


def check_answer(dimensions: Mapping[str, Any], description: str | None, evidence: Mapping[str, Any] | None,
                 class_names: list[str]) -> list[Claim]:
    """Extract and check the claims of one answer (see the module docstring).

    Parameters
    ----------
    dimensions : {dimension: DimensionAnswer} (anything with ``text`` and optional ``summary``)
    description : the literal description, when the prompt asked for one
    evidence : the failure's evidence row (dict); None -> every claim is unverifiable
    class_names : the run's class names in id order

    Returns
    -------
    list of Claim, numbered per dimension from 0
    """
    ev = evidence or {}
    sources: list[tuple[str, str]] = []
    if description:
        sources.append(("description", description))
    for dim, ans in dimensions.items():
        texts = [getattr(ans, "text", None) if not isinstance(ans, str) else ans, getattr(ans, "summary", None)]
        sources.append((dim, " ".join(t for t in texts if t)))
    out: list[Claim] = []
    counters: dict[str, int] = {}
    for dim, text in sources:
        for kind, span, d in extract_claims(text or "", class_names):
            verdict, fact = _check(kind, d, ev, class_names) if ev else ("unverifiable", None)
            i = counters.get(dim, 0)
            counters[dim] = i + 1
            out.append(Claim(dimension=dim, claim_index=i, kind=kind, claim=span.strip(), verdict=verdict, fact=fact))
    # the tags: checked like claims, numbered after the dimension's text claims
    for dim, ans in dimensions.items():
        tag = getattr(ans, "tag", None)
        if not tag:
            continue
        verdict, fact = check_tag(tag, ev) if ev else ("unverifiable", None)
        i = counters.get(dim, 0)
        counters[dim] = i + 1
        out.append(Claim(dimension=dim, claim_index=i, kind="tag", claim=str(tag), verdict=verdict, fact=fact))
    return out


__all__ = ["Claim", "VERDICTS", "CHECKED_TAGS", "COLOUR_SYNONYMS", "check_answer", "check_tag", "extract_claims",
           "format_facts"]
