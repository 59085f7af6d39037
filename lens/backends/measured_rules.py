"""The measured reading of one failure (the rules of the ``measured`` backend).

Kept apart from :mod:`lens.backends.measured` so that finding the backend (every ``lens``
command lists the backends) does not import numpy; the rules and the table of causes and
fixes are in that module's docstring.
"""

from __future__ import annotations

from lens import diagnosis, measure
from lens.backends.base import HypothesisRequest

_json = measure.json_dict


_num = measure._num


class Analysis:
    """The measured reading of one failure: tag, reason, verdict, cause, fix."""

    def __init__(self, request: HypothesisRequest):
        ev = dict(request.evidence or {})
        self.ev = ev
        self.tn, self.pn = request.true_class, request.pred_class
        self.conf = _num(request.confidence) if request.confidence is not None else _num(ev.get("confidence"))
        tp = _num(ev.get("true_prob"))
        self.tp = tp if tp is not None else _num(request.true_prob)
        self.zt, self.zp = _json(ev.get("z_true")), _json(ev.get("z_pred"))
        ev["z_true"], ev["z_pred"] = self.zt, self.zp
        self.le, self.am = _num(ev.get("label_error_score")), _num(ev.get("ambiguity_score"))
        self.tag = diagnosis.tag_of(self.le, self.am)
        self.diag = _json(ev.get("diagnosis"))
        torn = self.conf is not None and self.tp is not None and self.conf - self.tp < measure.TORN_GAP
        self.rules = ["torn"] if torn else []
        self.hard = measure.hard_image_reasons(ev)
        nl = ev.get("neighbour_labels")
        self.nl = [int(c) for c in nl] if nl is not None else []
        self.names = request.class_names

    # -- sentences ----------------------------------------------------------------------------

    def neighbours_sentence(self) -> str | None:
        if not self.nl:
            return None
        k = len(self.nl)
        n_pred = round((_num(self.ev.get("neighbour_pred_share")) or 0) * k)
        n_true = round((_num(self.ev.get("neighbour_true_share")) or 0) * k)
        return (f"{n_pred} of the {k} nearest training images in the model's feature space are labelled "
                f"{self.pn} and {n_true} {self.tn}.")

    def torn_sentence(self) -> str | None:
        if self.conf is None or self.tp is None:
            return None
        return f"The model is split between {self.pn} {self.conf:.2f} and {self.tn} {self.tp:.2f}."

    def hard_sentences(self) -> list[str]:
        out = []
        for key, fact in self.hard.items():
            if key == "dark":
                out.append(f"The image is dark: {fact} vs {self.tn} training images.")
            elif key == "low_contrast":
                out.append(f"The image has low contrast: {fact} vs {self.tn} training images.")
            elif key == "blurred":
                out.append(f"Fine detail is unusually low ({fact} vs {self.tn} training images): the image is "
                           f"blurred or enlarged from a crop.")
            elif key == "similar_colours":
                out.append(f"Object and background colours are similar: {fact} (CIELAB delta E, below "
                           f"{measure.FG_BG_SIMILAR:.0f}).")
        return out

    def background(self) -> tuple[str | None, bool]:
        """(sentence about the border colour, whether it points to the predicted class)."""
        colour = self.ev.get("border_colour")
        if not colour:
            return None, False
        shares = _json(self.ev.get("border_colours"))
        own = shares.get(colour)
        st = _json(self.ev.get("colour_share_true")).get("border")
        sp = _json(self.ev.get("colour_share_pred")).get("border")
        s = f"The background (border) is mostly {colour}" + (f" ({own:.0%} of its pixels)" if own else "")
        if st is None or sp is None:
            return s + ".", False
        points = sp >= measure.COLOUR_TYPICAL_SHARE and sp >= measure.COLOUR_TYPICAL_RATIO * max(st, 1e-9)
        s += (f", the dominant border colour of {sp:.0%} of {self.pn} training images and {st:.0%} of "
              f"{self.tn} training images.")
        return s, points

    def saliency_sentence(self) -> tuple[str | None, bool]:
        share = _num(self.ev.get("saliency_centre_share"))
        if share is None:
            return None, False
        off = share < measure.OFF_CENTRE_SALIENCY
        return (f"{1 - share:.0%} of the saliency for {self.pn} lies outside the centre (the centre is 25% of "
                f"the image)."), off

    def edge_sentence(self) -> str | None:
        z = _num(self.zt.get("edge_share"))
        if z is not None and z >= measure.UNUSUAL_Z:
            return (f"Edges reach the frame more than in {self.tn} training images (border edge share z={z:+.1f}): "
                    f"the object may be cut off.")
        return None

    def typical_sentence(self) -> str | None:
        zs = {k: _num(v) for k, v in self.zt.items()}
        zs = {k: v for k, v in zs.items() if v is not None}
        if not zs:
            skipped = _json(self.ev.get("skipped"))
            why = skipped.get("z_scores")
            return f"Image facts were not compared with training images ({why})." if why else None
        worst = max(zs, key=lambda k: abs(zs[k]))
        if abs(zs[worst]) < measure.UNUSUAL_Z:
            return (f"No measured image fact is unusual for {self.tn}: brightness, contrast, saturation, sharpness "
                    f"and colour distance are all within {measure.UNUSUAL_Z:.0f} standard deviations of its "
                    f"training images (largest: {worst.replace('_', ' ')} z={zs[worst]:+.1f}).")
        return None

    # -- dimensions ---------------------------------------------------------------------------

    def scores_sentence(self) -> str:
        """The two scores, their thresholds and the signals that were missing."""
        parts = []
        if self.le is not None:
            parts.append(f"label-error score {self.le:.2f} (tag at {diagnosis.LABEL_ERROR_THRESHOLD:.2f})")
        if self.am is not None:
            parts.append(f"ambiguity score {self.am:.2f} (tag at {diagnosis.AMBIGUITY_THRESHOLD:.2f})")
        if not parts:
            return ("No diagnosis scores are stored for this failure: its run has none of the signals they need "
                    "(or its evidence predates them: rerun `lens evidence`).")
        missing = sorted(set(self.diag.get("label_error", {}).get("missing", [])))
        text = "Scores: " + "; ".join(parts) + "."
        if missing:
            text += " Not used (missing for this run): " + ", ".join(m.replace("_", " ") for m in missing) + "."
        return text

    def data_quality(self) -> tuple[str, str]:
        """(reason, one-sentence verdict without class names)."""
        probs = (f"The model gives the label {self.tn} {self.tp:.3f} and {self.pn} {self.conf:.2f}."
                 if self.tp is not None and self.conf is not None else None)
        nb = self.neighbours_sentence()
        if self.tag == "annotation_issue":
            reason = " ".join(p for p in (self.scores_sentence(), probs, nb) if p)
            return reason, (f"The label may be wrong: the label-error score {self.le:.2f} is at or above the tag "
                            f"threshold, from the model's probabilities" + (" and the nearest training images."
                                                                           if nb else "."))
        if self.tag == "ambiguous_image":
            parts = [self.scores_sentence()]
            if "torn" in self.rules:
                parts.append(self.torn_sentence())
            parts += self.hard_sentences()
            sig = self.diag.get("ambiguity", {}).get("signals", {})
            if sig.get("pair_confusion") is not None:
                parts.append(f"The model confuses {self.tn} and {self.pn} in {sig['pair_confusion']:.1%} of their "
                             f"evaluation examples.")
            verdict = (f"Possibly ambiguous: the ambiguity score {self.am:.2f} is at or above the tag threshold"
                       + ("; the model is split between two classes" if "torn" in self.rules else "")
                       + ("; the image measures as hard" if self.hard else "") + ".")
            return " ".join(p for p in parts if p), verdict
        parts = [self.scores_sentence()]
        if nb:
            parts.append(nb)
        typ = self.typical_sentence()
        if typ:
            parts.append(typ)
        if probs:
            parts.append(probs)
        confident = self.conf is not None and self.conf >= measure.CONFIDENT_OTHER
        verdict = ("Model error: neither score reaches its tag, so no measured signal points to the data, yet the "
                   "model " + ("confidently picks another class." if confident else "picks another class."))
        return " ".join(parts), verdict

    def cause(self) -> tuple[str, str]:
        """(cause key, visual_cause text)."""
        bg, bg_points = self.background()
        sal, sal_off = self.saliency_sentence()
        edge = self.edge_sentence()
        nb = self.neighbours_sentence()
        if self.tag == "annotation_issue":
            why = (f"{nb[0].lower()}{nb[1:]}" if nb else
                   f"the model gives the label {self.tn} {self.tp:.3f}." if self.tp is not None else
                   "the label-error score is high.")
            key, lead = "annotation", [f"The measurements point to the label rather than the image: {why}"]
        elif "dark" in self.hard or "low_contrast" in self.hard:
            key = "dark" if "dark" in self.hard else "low_contrast"
            lead = self.hard_sentences()
        elif "blurred" in self.hard:
            key, lead = "blurred", self.hard_sentences()
        elif "similar_colours" in self.hard:
            key, lead = "colour", self.hard_sentences()
        elif bg_points:
            key, lead = "background", []
        elif sal_off:
            key, lead = "saliency", []
        elif edge:
            key, lead = "crop", []
        elif "torn" in self.rules:
            key, lead = "torn", [self.torn_sentence()]
        else:
            key = "none"
            lead = [self.typical_sentence() or "No measured image fact stands out."]
        rest = [s for s in (bg, sal, edge, nb if key != "annotation" else None) if s]
        if key == "background":
            rest = [bg] + [s for s in rest if s != bg]
        if key == "saliency":
            rest = [sal] + [s for s in rest if s != sal]
        if key == "crop":
            rest = [edge] + [s for s in rest if s != edge]
        text = " ".join(s for s in lead + rest if s)
        return key, text

    def fix(self, key: str) -> str:
        tn, pn = self.tn, self.pn
        colour = self.ev.get("border_colour") or "other"
        return {
            "annotation": (f"Relabel this image after checking it, and audit the training split for the same "
                           f"{tn}/{pn} pair" + (f": the nearest training images carry {pn}." if self.nl else ".")),
            "dark": (f"Brightness and contrast jitter in training (e.g. ColorJitter(brightness=0.4, contrast=0.4)) "
                     f"so dark {tn} images are seen."),
            "low_contrast": (f"Brightness and contrast jitter in training (e.g. ColorJitter(brightness=0.4, "
                             f"contrast=0.4)) so low-contrast {tn} images are seen."),
            "blurred": (f"Blur and rescaling augmentation (GaussianBlur, RandomResizedCrop) so {tn} is learnt "
                        f"without fine detail."),
            "colour": (f"Colour jitter and {tn} images on backgrounds from other classes, so the colour contrast "
                       f"between object and background stops deciding the class."),
            "background": (f"Colour jitter and {tn} training images on {colour} backgrounds (backgrounds from other "
                           f"classes), so a {colour} background stops predicting {pn}."),
            "saliency": (f"Random erasing and random crops, so the model relies on the object rather than the "
                         f"surroundings that drive {pn} here."),
            "crop": f"Random resized crop, so partial views of {tn} are seen in training.",
            "torn": (f"More training examples of the {tn}/{pn} pair (hard-example mining) and mixup between the "
                     f"two classes."),
            "none": (f"Hard-example mining: more {tn} training images like this one; no data problem was measured, "
                     f"so a stronger model or longer training is the next step."),
        }[key]

    def description(self) -> str:
        ev = self.ev
        parts = []
        if ev.get("border_colour"):
            parts.append(f"border mostly {ev['border_colour']}")
        if ev.get("centre_colour"):
            parts.append(f"centre mostly {ev['centre_colour']}")
        for fact in ("brightness", "contrast"):
            v = _num(ev.get(fact))
            if v is not None:
                parts.append(f"{fact} {v:.2f}")
        return "Measured, not seen: " + (", ".join(parts) if parts else "no image facts") + "."
