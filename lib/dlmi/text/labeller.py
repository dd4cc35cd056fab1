"""A rule-based report labeller for clinical accuracy (lecture unit 06: judging generated reports).

BLEU, METEOR, ROUGE-L and CIDEr count shared words. "No pneumothorax." and "Pneumothorax." share
almost all of theirs, yet say opposite things. Report-generation papers therefore also run a
*labeller* over generated and reference reports and compare the findings it extracts: Liu et al.
(2019, "Clinically Accurate Chest X-Ray Report Generation") used the CheXpert labeller and report
clinical precision / recall / F1; this module is a small, readable labeller of the same kind.

How it works (NegEx, Chapman et al. 2001, "A simple algorithm for identifying negated findings and
diseases in discharge summaries"):

1. split the report into sentences;
2. find *mentions* of each finding with regular expressions (``"cardiomegaly"``, ``"enlarged
   heart"``, ``"blunting of the costophrenic angle"`` ... — see :data:`FINDING_PATTERNS`);
3. for each mention look for *triggers* in its sentence: pre-negation triggers before it (``"no"``,
   ``"without"``, ``"free of"``, ``"negative for"``), post-negation triggers after it (``"is not
   seen"``, ``"has resolved"``), and uncertainty triggers (``"possible"``, ``"may"``, ``"cannot be
   excluded"``). A trigger's scope runs to the end of the sentence, or to a *terminator* (``"but"``,
   ``"however"``, ``"which"``) that ends it: ``"no effusion but a small pneumothorax"``.
   Pseudo-triggers such as ``"cannot be excluded"`` are matched first, so the ``"not"`` inside them
   does not read as a negation;
4. a finding's status in the report is ``POSITIVE`` if any mention is positive, else ``UNCERTAIN``
   if any is uncertain, else ``NEGATIVE`` if any is negated, else ``ABSENT`` (never mentioned).

``normal`` is positive when no finding is positive (the CheXpert "No Finding" convention).

The labeller is validated against the Indiana University reports' MeSH indexing
(``tests/test_labeller.py`` asserts a precision and recall per finding).

Example::

    >>> label_report("Heart size is mildly enlarged. No pneumothorax. Possible small left effusion.")
    {'cardiomegaly': 1, 'effusion': 2, 'pneumothorax': -1}
    >>> findings_of("Heart size is mildly enlarged. No pneumothorax.")
    ['cardiomegaly']
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "FINDINGS", "LABEL_NAMES", "POSITIVE", "NEGATIVE", "UNCERTAIN", "ABSENT", "FINDING_PATTERNS",
    "Mention", "find_mentions", "label_report", "findings_of", "label_matrix", "clinical_scores",
    "IU_LABEL_MAP",
]

#: Mention status codes (as in the CheXpert labeller: 1 positive, 0 negative, -1 uncertain).
POSITIVE, NEGATIVE, UNCERTAIN, ABSENT = 1, 0, -1, None
_STATUS_CODE = {"positive": POSITIVE, "negative": NEGATIVE, "uncertain": UNCERTAIN}

#: The findings the labeller looks for (those of the lecture and of the chest phantom).
FINDINGS = ("cardiomegaly", "effusion", "pneumothorax", "nodule", "opacity", "atelectasis", "edema")
#: Label order of :func:`label_matrix` / :func:`clinical_scores`: "normal" first, then FINDINGS.
LABEL_NAMES = ("normal",) + FINDINGS

#: Which ``dlmi.data.IU_LABELS`` (MeSH-derived) each finding corresponds to, for validation.
IU_LABEL_MAP = {
    "cardiomegaly": ("cardiomegaly",),
    "effusion": ("effusion",),
    "pneumothorax": ("pneumothorax",),
    "nodule": ("nodule",),
    "opacity": ("opacity", "airspace disease"),
    "atelectasis": ("atelectasis",),
    "edema": ("edema",),
}

_HEART = r"(?:heart|cardiac|cardio-?mediastinal|cardiopericardial)"
#: Regular expressions of the mentions of each finding (matched on lower-cased text).
FINDING_PATTERNS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        r"\bcardiomegaly\b",
        r"\b(?:enlarged|enlargement of the) (?:\w+ )?" + _HEART,
        _HEART + r"[\w\s]{0,40}?\b(?:enlarged|enlargement)\b",
        r"\b" + _HEART + r"[\w\s]{0,30}?\b(?:is|are|appears?|remains?) (?:\w+ )?(?:large|prominent)\b",
    ),
    "effusion": (
        r"(?<!pericardial )\beffusions?\b",
        r"\bblunt(?:ed|ing)? (?:of )?(?:the )?(?:\w+ )?costophrenic",
        r"\bcostophrenic (?:angles?|sulcus|sulci|recess(?:es)?)[\w\s]{0,20}?\bblunt",
        r"\bpleural fluid\b",
    ),
    "pneumothorax": (r"\b(?:hydro|hemo)?pneumothora(?:x|ces)\b",),
    "nodule": (
        r"(?<!calcified )\bnodules?\b",
        r"\bmass(?:es)?\b",
    ),
    "opacity": (
        r"\bopacit(?:y|ies)\b", r"\bopacification\b",
        r"(?<!calcified )\bdensit(?:y|ies)\b",
        r"\binfiltrates?\b", r"\bconsolidations?\b", r"\bconsolidative\b",
        r"\bairspace (?:disease|process)\b", r"\bpneumonias?\b",
    ),
    "atelectasis": (r"\batelecta(?:sis|ses|tic)\b", r"\bvolume loss\b"),
    "edema": (
        r"\bedema\b", r"\b(?:vascular|pulmonary|venous) congestion\b", r"\bheart failure\b", r"\bchf\b",
    ),
}

# Pseudo-triggers: phrases that contain a negation word but express doubt (matched first).
_UNCERTAIN_PSEUDO = (
    r"\bcan ?not be (?:entirely |completely |totally )?(?:excluded|ruled out)\b",
    r"\bnot (?:be )?(?:entirely |completely )?(?:excluded|ruled out)\b",
    r"\bcan ?not (?:entirely |completely )?(?:exclude|rule out)\b",
    r"\bnot (?:entirely |completely )?(?:exclude|rule out)\b",
    r"\bno definite\b(?= [\w\s]*\b(?:but|however)\b)",
)
# Phrases that look like triggers but are not ("no change", "not only"): removed before matching.
_PSEUDO_NEGATION = (
    r"\bno (?:significant |interval )?change\b", r"\bnot only\b", r"\bno increase\b",
    r"\bwithout (?:significant |interval )?change\b", r"\bgram negative\b",
)
_PRE_NEGATION = (
    r"\bno\b", r"\bnot\b", r"\bnor\b", r"\bwithout\b", r"\bnegative for\b", r"\bfree of\b",
    r"\babsence of\b", r"\bresolution of\b", r"\bresolved\b", r"\bclear of\b", r"\bnever\b",
    r"\brather than\b", r"\bneither\b",
)
_POST_NEGATION = (
    r"\b(?:is|are|was|were|has|have)? ?(?:not|no longer) (?:\w+ )?(?:seen|identified|present|visualized|"
    r"demonstrated|evident|appreciated|noted|detected|enlarged)\b",
    r"\b(?:has|have) (?:\w+ )?resolved\b", r"\bresolved\b", r"\bis absent\b", r"\bare absent\b",
    r"\bfree\b",
)
_UNCERTAIN = (
    r"\bmay\b", r"\bmight\b", r"\bcould\b", r"\bpossibl[ey]\b", r"\bprobabl[ey]\b", r"\blikely\b",
    r"\bquestionable\b", r"\bquestion of\b", r"\bsuspicious\b", r"\bsuspected\b", r"\bsuggest(?:s|ive|ing)?\b",
    r"\bconcern(?:ing)? for\b", r"\bcannot exclude\b", r"\bversus\b", r"\bvs\b", r"\bequivocal\b",
    r"\bdifferential\b", r"\bevaluate for\b", r"\bpotential\b", r"\bpresumed\b", r"\bconsider(?:ed)?\b",
)
_TERMINATORS = (
    r"\bbut\b", r"\bhowever\b", r"\balthough\b", r"\bthough\b", r"\bexcept\b", r"\bwhich\b",
    r"\baside from\b", r"\bapart from\b", r"\bwith the exception\b", r"\bstill\b", r"\bnow\b",
    r"\bthere is\b", r"\bthere are\b", r";",
)


def _compile(patterns):
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_MENTION_RE = {finding: _compile(pats) for finding, pats in FINDING_PATTERNS.items()}
_UNCERTAIN_PSEUDO_RE = _compile(_UNCERTAIN_PSEUDO)
_PSEUDO_NEGATION_RE = _compile(_PSEUDO_NEGATION)
_PRE_NEG_RE = _compile(_PRE_NEGATION)
_POST_NEG_RE = _compile(_POST_NEGATION)
_UNCERTAIN_RE = _compile(_UNCERTAIN)
_TERMINATOR_RE = _compile(_TERMINATORS)
_SENTENCE_RE = re.compile(r"[^.!?]+")
_ANON_RE = re.compile(r"x{3,}")


@dataclass(frozen=True)
class Mention:
    """One mention of a finding: its sentence, character span in it, and status."""

    finding: str
    sentence: str
    start: int
    end: int
    status: str  # "positive", "negative" or "uncertain"

    @property
    def text(self) -> str:
        return self.sentence[self.start:self.end]


def _sentences(text: str) -> list[str]:
    if not isinstance(text, str):
        raise TypeError(f"report must be a string, got {type(text).__name__}")
    text = _ANON_RE.sub("xxxx", text.lower())
    # keep decimals ("1.5 cm") inside their sentence
    text = re.sub(r"(\d)\.(\d)", r"\1,\2", text)
    return [s.strip() for s in _SENTENCE_RE.findall(text) if s.strip()]


def _blank(sentence: str, regex) -> str:
    """The sentence with every match of ``regex`` replaced by spaces (positions are kept)."""
    return regex.sub(lambda m: " " * len(m.group()), sentence)


def _status(sentence: str, start: int, end: int) -> str:
    terminators = [m.start() for m in _TERMINATOR_RE.finditer(sentence)]
    # the scope of a trigger before the mention ends at the first terminator between them
    def before(regex, text):
        for m in regex.finditer(text[:start]):
            if not any(m.end() <= t < start for t in terminators):
                return True
        return False

    def after(regex, text):
        for m in regex.finditer(text, end):
            if not any(end <= t < m.start() for t in terminators):
                return True
        return False

    if before(_UNCERTAIN_PSEUDO_RE, sentence) or after(_UNCERTAIN_PSEUDO_RE, sentence):
        return "uncertain"
    cleaned = _blank(_blank(sentence, _UNCERTAIN_PSEUDO_RE), _PSEUDO_NEGATION_RE)
    # a negation inside the mention itself ("heart is not enlarged") counts as a pre-trigger
    inside = cleaned[start:end]
    if _PRE_NEG_RE.search(inside) or before(_PRE_NEG_RE, cleaned) or after(_POST_NEG_RE, cleaned):
        return "negative"
    if _UNCERTAIN_RE.search(inside) or before(_UNCERTAIN_RE, cleaned) or after(_UNCERTAIN_RE, cleaned):
        return "uncertain"
    return "positive"


def find_mentions(report: str, findings: Sequence[str] = FINDINGS) -> list[Mention]:
    """Every mention of ``findings`` in ``report``, each with its status, in reading order."""
    _check_findings(findings)
    mentions = []
    for sentence in _sentences(report):
        for finding in findings:
            for m in _MENTION_RE[finding].finditer(sentence):
                mentions.append(Mention(finding, sentence, m.start(), m.end(), _status(sentence, m.start(), m.end())))
    return mentions


def _check_findings(findings):
    if isinstance(findings, str):
        raise TypeError("findings must be a list of finding names, not one string")
    unknown = [f for f in findings if f not in FINDING_PATTERNS]
    if unknown:
        raise ValueError(f"unknown findings {unknown}; the labeller knows {list(FINDINGS)}")


def label_report(report: str, findings: Sequence[str] = FINDINGS) -> dict[str, int]:
    """``{finding: status}`` for the findings mentioned in ``report``: 1 positive, 0 negative,
    -1 uncertain (CheXpert's codes). Findings never mentioned are left out."""
    best: dict[str, int] = {}
    rank = {"positive": 3, "uncertain": 2, "negative": 1}
    ranks: dict[str, int] = {}
    for mention in find_mentions(report, findings):
        r = rank[mention.status]
        if r > ranks.get(mention.finding, 0):
            ranks[mention.finding] = r
            best[mention.finding] = _STATUS_CODE[mention.status]
    return {f: best[f] for f in findings if f in best}


def findings_of(report: str, findings: Sequence[str] = FINDINGS, uncertain: str = "positive") -> list[str]:
    """The findings ``report`` states as present, in ``findings`` order.

    ``uncertain`` says how a hedged mention ("possible effusion") counts: ``"positive"`` (default,
    the "U-ones" policy of CheXpert and what the IU MeSH indexers did) or ``"negative"``.
    """
    if uncertain not in ("positive", "negative"):
        raise ValueError(f"uncertain must be 'positive' or 'negative', got {uncertain!r}")
    labels = label_report(report, findings)
    keep = {POSITIVE} | ({UNCERTAIN} if uncertain == "positive" else set())
    return [f for f in findings if labels.get(f, ABSENT) in keep]


def label_matrix(reports: Iterable[str], findings: Sequence[str] = FINDINGS, uncertain: str = "positive",
                 include_normal: bool = True):
    """(N, K) 0/1 numpy matrix of the findings of each report; column order ``("normal",) + findings``
    when ``include_normal`` (normal = no finding present)."""
    import numpy as np

    if isinstance(reports, str):
        raise TypeError("reports must be a list of report texts, not one string")
    rows = []
    for report in reports:
        present = set(findings_of(report, findings, uncertain))
        row = [float(f in present) for f in findings]
        if include_normal:
            row = [float(not present)] + row
        rows.append(row)
    width = len(findings) + int(include_normal)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)


def clinical_scores(hypotheses: Sequence[str], references: Sequence[str], findings: Sequence[str] = FINDINGS,
                    uncertain: str = "positive", include_normal: bool = True) -> dict:
    """Clinical precision / recall / F1 of generated reports against reference reports.

    Both are run through the labeller; each (report, label) pair is one binary decision. Returns
    ``{"precision", "recall", "f1"}`` micro-averaged over all labels (the numbers Liu et al. 2019
    report), ``"macro_f1"`` (mean over labels that occur in the references or hypotheses),
    ``"accuracy"`` (fraction of reports whose whole label set is right) and ``"per_label"``:
    ``{label: {"precision", "recall", "f1", "support"}}``. A ratio with a zero denominator is 0.
    """
    import numpy as np

    if isinstance(hypotheses, str) or isinstance(references, str):
        raise TypeError("hypotheses and references must be lists of report texts")
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("clinical_scores got no reports")
    names = (("normal",) if include_normal else ()) + tuple(findings)
    hyp = label_matrix(hypotheses, findings, uncertain, include_normal).astype(bool)
    ref = label_matrix(references, findings, uncertain, include_normal).astype(bool)

    def prf(tp, fp, fn):
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return p, r, f

    tp = (hyp & ref).sum(0)
    fp = (hyp & ~ref).sum(0)
    fn = (~hyp & ref).sum(0)
    per_label, macro = {}, []
    for j, name in enumerate(names):
        p, r, f = prf(int(tp[j]), int(fp[j]), int(fn[j]))
        per_label[name] = {"precision": p, "recall": r, "f1": f, "support": int(ref[:, j].sum())}
        if ref[:, j].any() or hyp[:, j].any():
            macro.append(f)
    p, r, f = prf(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    return {"precision": p, "recall": r, "f1": f, "macro_f1": float(np.mean(macro)) if macro else 0.0,
            "accuracy": float((hyp == ref).all(1).mean()), "per_label": per_label}
