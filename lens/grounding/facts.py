"""The measured facts of one failure as plain lines, for prompts that include ``{evidence}``.

:func:`format_facts` renders an ``evidence`` row (JSON columns as dicts or JSON text); the
small accessors here are shared with the claim checks in :mod:`lens.grounding`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lens import measure

#: most classes listed among the nearest training images, and colour terms per region
TOP_LISTED = 3

# -- evidence access helpers -------------------------------------------------------------------


_json = measure.json_dict


def _num(v: Any) -> float | None:
    return measure._num(v)


def _list(v: Any) -> list | None:
    if v is None:
        return None
    try:
        return list(v)
    except TypeError:
        return None


def _name(class_names, cid) -> str:
    try:
        return class_names[int(cid)]
    except (TypeError, ValueError, IndexError):
        return f"class {cid}"


def _z(evidence: Mapping[str, Any], which: str, fact: str) -> float | None:
    return _num(_json(evidence.get(f"z_{which}")).get(fact))


def _shares_text(shares: dict) -> str:
    return ", ".join(f"{t} {s:.0%}" for t, s in list(shares.items())[:TOP_LISTED]) or "none"


# -- format_facts -------------------------------------------------------------------------------


def _model_line(ev: Mapping[str, Any], tn: str, pn: str) -> str | None:
    conf, tp = _num(ev.get("confidence")), _num(ev.get("true_prob"))
    parts = []
    if conf is not None:
        parts.append(f"the model gave {pn} {conf:.2f}")
    if tp is not None:
        rank = ev.get("true_rank")
        parts.append(f"{tn} {tp:.2f}" + (f" (rank {int(rank)})" if rank is not None else ""))
    m, h = _num(ev.get("margin")), _num(ev.get("entropy"))
    if m is not None:
        parts.append(f"margin top-1 minus top-2 {m:.2f}")
    if h is not None:
        parts.append(f"entropy {h:.2f} nats")
    return "- Model: " + "; ".join(parts) + "." if parts else None


def _label_lines(ev: Mapping[str, Any], class_names: list[str], tn: str) -> list[str]:
    lines = []
    lq = _num(ev.get("label_quality"))
    if lq is not None:
        flag = ev.get("label_issue")
        lines.append(
            f"- Label quality (confident learning, 0-1, low = suspicious): {lq:.2f}"
            + ("; flagged as a possible label issue." if flag else "; not flagged as a label issue.")
        )
    nl = _list(ev.get("neighbour_labels"))
    if nl:
        label = ev.get("label")
        counts: dict[int, int] = {}
        for c in nl:
            counts[int(c)] = counts.get(int(c), 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:TOP_LISTED]
        desc = ", ".join(f"{c} labelled {_name(class_names, k)}" for k, c in top)
        lines.append(
            f"- Nearest {len(nl)} training images in the model's feature space: {desc}"
            f" ({sum(1 for c in nl if label is not None and int(c) == int(label))} of {len(nl)} labelled {tn})."
        )
    return lines


#: the image facts of the "Image:" line: (evidence column, words, number format)
_IMAGE_FACTS = (
    ("brightness", "brightness", "{:.2f}"),
    ("contrast", "contrast", "{:.3f}"),
    ("saturation", "saturation", "{:.2f}"),
    ("sharpness", "sharpness (fine detail)", "{:.2f}"),
)


def _image_line(ev: Mapping[str, Any], tn: str, pn: str) -> str | None:
    if _num(ev.get("brightness")) is None:
        return None
    facts = []
    for fact, words, fmt in _IMAGE_FACTS:
        v = _num(ev.get(fact))
        if v is None:
            continue
        zt, zp = _z(ev, "true", fact), _z(ev, "pred", fact)
        zs = ([f"z={zt:+.1f} vs {tn}"] if zt is not None else []) + ([f"z={zp:+.1f} vs {pn}"] if zp is not None else [])
        facts.append(f"{words} {fmt.format(v)}" + (f" ({', '.join(zs)})" if zs else ""))
    return "- Image: " + "; ".join(facts) + " (z-scores against training images of the class)."


def _region_lines(ev: Mapping[str, Any], tn: str, pn: str) -> list[str]:
    lines = []
    bs, cs = _json(ev.get("border_colours")), _json(ev.get("centre_colours"))
    if ev.get("border_colour"):
        st, sp = _json(ev.get("colour_share_true")), _json(ev.get("colour_share_pred"))
        typ = ""
        if "border" in st and "border" in sp:
            typ = (f"; a {ev['border_colour']} border is dominant in {st['border']:.0%} of {tn} and"
                   f" {sp['border']:.0%} of {pn} training images")
        lines.append(f"- Border (background proxy): mostly {ev['border_colour']} ({_shares_text(bs)}){typ}.")
    if ev.get("centre_colour"):
        d = _num(ev.get("fg_bg_distance"))
        lines.append(
            f"- Centre (foreground proxy): mostly {ev['centre_colour']} ({_shares_text(cs)})"
            + (f"; colour distance centre vs border {d:.1f} (CIELAB delta E)." if d is not None else ".")
        )
    e = _num(ev.get("edge_share"))
    if e is not None:
        ze = _z(ev, "true", "edge_share")
        lines.append(f"- Share of edges in the border ring: {e:.2f}" + (f" (z={ze:+.1f} vs {tn})." if ze is not None else "."))
    s = _num(ev.get("saliency_centre_share"))
    if s is not None:
        lines.append(
            f"- Saliency of {pn} ({ev.get('saliency_method')}): {s:.0%} in the centre (the centre is 25% of the"
            f" image), {1 - s:.0%} outside it."
        )
    return lines


def format_facts(evidence: Mapping[str, Any] | None, class_names: list[str]) -> str:
    """The measured facts of one failure as plain lines (empty string without evidence).

    Every line states a measurement with its number; parts that were not measured are
    listed as such, with the reason.
    """
    if not evidence:
        return ""
    ev = evidence
    label, pred = ev.get("label"), ev.get("pred")
    tn = _name(class_names, label) if label is not None else "the true class"
    pn = _name(class_names, pred) if pred is not None else "the predicted class"
    lines = [_model_line(ev, tn, pn), *_label_lines(ev, class_names, tn), _image_line(ev, tn, pn),
             *_region_lines(ev, tn, pn)]
    skipped = _json(ev.get("skipped"))
    if skipped:
        lines.append("- Not measured: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + ".")
    return "\n".join(line for line in lines if line)
