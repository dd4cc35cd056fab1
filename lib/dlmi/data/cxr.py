"""Chest-radiograph phantoms with known findings, paired with real radiologists' sentences (unit 06).

No chest X-ray *images* can ship offline, but 3,955 real IU reports can (:mod:`dlmi.data.iu_reports`).
This module draws frontal chest radiographs as phantoms whose findings are known exactly, and
writes each one a report made of **real IU report sentences** that state those findings:

* :func:`make_cxr_phantom` — one image (posterior-anterior view, so the patient's right is on the
  image's left): body outline, two lungs with lung markings, heart and mediastinum, diaphragm domes
  with costophrenic angles, ribs, spine, noise. Findings are controlled:

  ==============  ==========================================================================
  cardiomegaly    cardiothoracic ratio (heart width / thoracic width) 0.55-0.66 instead of ~0.42
  effusion        fluid filling the lung base up to a meniscus: blunted costophrenic angle
  pneumothorax    a rim of air without lung markings at the apex/lateral wall, with the
                  visceral pleural line
  nodule          a round opacity of a given size in a lung zone (upper / mid / lower)
  opacity         a lobar airspace opacity filling one lung zone
  ==============  ==========================================================================

  Each finding is a :class:`FindingInstance` with its class, its ``xyxy`` pixel box (torchvision
  convention, so detection code can use the same phantoms) and its attributes (side, size, zone).

* :class:`CXRSentenceBank` — real IU sentences sorted by topic with :mod:`dlmi.text.labeller`:
  sentences *positive* for one phantom finding and mentioning nothing else ("Small left pleural
  effusion."), and normal sentences per topic (heart, lungs, pleura, impression). A sentence's
  laterality, size and zone ("small **right** **apical** pneumothorax") set the phantom's, so the
  text and the image agree.
* :class:`CXRReportDataset` — ``(image tensor (1, H, W), report text, finding labels)``; all
  deterministic from ``seed``. ``dataset.target(i)`` gives ``{"boxes", "labels"}`` for detection.

Everything is vectorised numpy; a 64×64 image takes well under a millisecond to a few ms.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

__all__ = [
    "CXR_FINDINGS", "FindingInstance", "CXRPhantom", "make_cxr_phantom", "sample_findings",
    "CXRSentenceBank", "CXRReportDataset", "REPORT_TOPICS",
]

#: Finding classes the phantom can draw (detection class ids are 1 + index; 0 is background).
CXR_FINDINGS = ("cardiomegaly", "effusion", "pneumothorax", "nodule", "opacity")
SIDES = ("right", "left")  # the patient's sides; "right" is drawn on the image's left
ZONES = ("upper", "mid", "lower")
SIZES = ("small", "large")
#: Report sections in order: which findings each one reports, and the normal sentence topic.
REPORT_TOPICS = (("heart", ("cardiomegaly",)), ("lungs", ("opacity", "nodule")),
                 ("pleura", ("effusion", "pneumothorax")), ("impression", ()))


@dataclass(frozen=True)
class FindingInstance:
    """One drawn finding: class name, ``box`` = (x0, y0, x1, y1) in pixels, attributes."""

    label: str
    box: tuple = (0.0, 0.0, 0.0, 0.0)
    side: str | None = None    # "right" / "left" (patient side) or None (cardiomegaly)
    size: str = "small"        # "small" / "large"
    zone: str | None = None    # "upper" / "mid" / "lower" for nodule and opacity

    @property
    def class_id(self) -> int:
        return 1 + CXR_FINDINGS.index(self.label)


@dataclass
class CXRPhantom:
    """A phantom radiograph: ``image`` (H, W) float32 in [0, 1], its findings and geometry."""

    image: np.ndarray
    findings: list = field(default_factory=list)
    ctr: float = 0.42
    report: str | None = None

    @property
    def labels(self) -> list[str]:
        """Finding classes present, in CXR_FINDINGS order (empty list = normal)."""
        present = {f.label for f in self.findings}
        return [label for label in CXR_FINDINGS if label in present]

    @property
    def boxes(self) -> np.ndarray:
        return np.array([f.box for f in self.findings], dtype=np.float32).reshape(-1, 4)

    def target(self) -> dict:
        """torchvision-style detection target ``{"boxes": (N, 4) float, "labels": (N,) int64}``."""
        import torch

        return {"boxes": torch.as_tensor(self.boxes),
                "labels": torch.tensor([f.class_id for f in self.findings], dtype=torch.int64)}


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------

def _smooth_noise(rng, shape, sigma):
    """Gaussian-filtered white noise, unit standard deviation (FFT, so any sigma costs the same)."""
    noise = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))
    out = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=shape)
    return out / (out.std() + 1e-8)


def _box(mask, pad=0.5):
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs.min()) - pad + 0.5, float(ys.min()) - pad + 0.5,
            float(xs.max()) + pad + 0.5, float(ys.max()) + pad + 0.5)


def _normalise_spec(spec) -> dict:
    if isinstance(spec, FindingInstance):
        spec = {"label": spec.label, "side": spec.side, "size": spec.size, "zone": spec.zone}
    elif isinstance(spec, str):
        spec = {"label": spec}
    elif not isinstance(spec, dict):
        raise TypeError(f"a finding must be a name, a dict or a FindingInstance, got {type(spec).__name__}")
    spec = dict(spec)
    label = spec.get("label")
    if label not in CXR_FINDINGS:
        raise ValueError(f"unknown finding {label!r}; the phantom draws {list(CXR_FINDINGS)}")
    for key, allowed in (("side", SIDES), ("size", SIZES), ("zone", ZONES)):
        if spec.get(key) is not None and spec[key] not in allowed:
            raise ValueError(f"{label}: {key} must be one of {allowed} or None, got {spec[key]!r}")
    return spec


def make_cxr_phantom(findings=(), size: int = 64, seed: int | None = 0, rng=None, noise: float = 0.03,
                     ctr: float | None = None) -> CXRPhantom:
    """Draw one frontal chest radiograph phantom.

    Parameters
    ----------
    findings:
        Finding names or dicts ``{"label", "side", "size", "zone"}`` (unset attributes are drawn at
        random): e.g. ``["cardiomegaly", {"label": "effusion", "side": "left", "size": "large"}]``.
    size:
        Image side in pixels (square). 64 is enough to see every finding; any size >= 32 works.
    seed, rng:
        Everything random comes from ``rng`` (a ``numpy.random.Generator``) or ``default_rng(seed)``.
    noise:
        Standard deviation of the quantum-like noise added at the end.
    ctr:
        Force the cardiothoracic ratio (default: ~0.42 normal, 0.55-0.66 with cardiomegaly).

    Returns a :class:`CXRPhantom` whose ``findings`` carry the pixel boxes.
    """
    if not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"size must be an integer >= 32, got {size!r}")
    if isinstance(findings, (str, dict)):
        findings = [findings]
    rng = rng if rng is not None else np.random.default_rng(seed)
    specs = [_normalise_spec(s) for s in findings]
    labels = {s["label"] for s in specs}
    H = W = int(size)
    v, u = np.meshgrid((np.arange(H) + 0.5) / H, (np.arange(W) + 0.5) / W, indexing="ij")

    # patient geometry (jittered per image)
    jit = lambda s: rng.normal(0.0, s)
    cx = 0.5 + jit(0.01)
    lung_top = 0.14 + jit(0.01)
    half_w = 0.35 + jit(0.012)                       # thoracic half-width (outer lung edges)
    lung_w = 0.145 + jit(0.006)
    lung_cx = {"right": cx - half_w + lung_w, "left": cx + half_w - lung_w}
    dome = {"right": 0.70 + jit(0.012), "left": 0.73 + jit(0.012)}  # right hemidiaphragm is higher

    image = np.zeros((H, W))
    body = ((u - cx) / 0.47) ** 2 + ((v - 0.62) / 0.62) ** 2 < 1
    image[body] = 0.42
    shoulders = (v < 0.2) & (np.abs(u - cx) < 0.47 - 0.9 * (0.2 - v))
    image[shoulders] = 0.42

    lungs, lung_r, dome_v = {}, {}, {}
    for side in SIDES:
        lc = lung_cx[side]
        lateral = -1.0 if side == "right" else 1.0
        dx = (u - lc) / lung_w
        # diaphragm dome: highest medially-central, falling to the lateral costophrenic recess
        dv = dome[side] + 0.05 * np.clip(dx * lateral, 0, None) ** 2 + 0.06 * np.clip(-dx * lateral, 0, 1.2) ** 2 \
            - 0.03 * np.exp(-dx ** 2 / 0.3)
        bottom = dome[side] + 0.08
        dy = (v - (lung_top + bottom) / 2) / ((bottom - lung_top) / 2)
        r = (np.abs(dx) ** 2.4 + np.abs(np.clip(dy, None, 0)) ** 2.0) ** (1 / 2.4)
        lungs[side] = (r < 1) & (v < dv) & (v > lung_top)
        lung_r[side] = r
        dome_v[side] = dv
    lung_any = lungs["right"] | lungs["left"]
    markings = _smooth_noise(rng, (H, W), sigma=0.9)
    image[lung_any] = 0.17 + 0.035 * markings[lung_any]
    # vessels fanning from the hila: brighter near the hilum
    for side in SIDES:
        hil = np.exp(-(((u - (cx + (0.09 if side == "left" else -0.09))) / 0.1) ** 2 + ((v - 0.45) / 0.12) ** 2))
        image[lungs[side]] += 0.12 * hil[lungs[side]]

    # heart and mediastinum
    if ctr is None:
        ctr = rng.uniform(0.55, 0.66) if "cardiomegaly" in labels else float(np.clip(rng.normal(0.42, 0.025), 0.36, 0.47))
    heart_half = ctr * half_w                         # heart width / thoracic width = ctr
    heart_cx = cx + 0.18 * heart_half                 # two thirds of the heart lie on the patient's left
    heart_cy = min(dome["right"], dome["left"]) - 0.09
    heart = ((u - heart_cx) / heart_half) ** 2 + ((v - heart_cy) / 0.125) ** 2 < 1
    mediastinum = (np.abs(u - cx) < 0.055 + 0.02 * (v > 0.35)) & (v < heart_cy) & (v > 0.05)
    aortic_knob = ((u - (cx + 0.06)) / 0.045) ** 2 + ((v - 0.32) / 0.035) ** 2 < 1
    image[heart | mediastinum | aortic_knob] = 0.66
    # below the diaphragm: liver / stomach soft tissue
    below = body & ~lung_any & (v > np.minimum(dome_v["right"], dome_v["left"]) - 0.02) & ~heart
    image[below] = np.maximum(image[below], 0.6)

    # ribs: curved bands over the lungs (posterior ribs slope down laterally)
    ribs = np.zeros((H, W), dtype=bool)
    for side in SIDES:
        lc, lateral = lung_cx[side], (-1.0 if side == "right" else 1.0)
        t = (u - (cx + lateral * 0.04)) * lateral
        for k in range(9):
            y0 = lung_top - 0.02 + k * 0.068 + jit(0.003)
            tp = np.clip(t, 0.0, None)
            centre = y0 + 0.22 * tp ** 1.5 - 0.05 * tp
            ribs |= (np.abs(v - centre) < 0.011 + 0.004 * (k > 4)) & (t > 0) & (np.abs(u - lc) < lung_w * 1.3)
    image[ribs & body] += 0.11
    spine = np.abs(u - cx) < 0.035
    image[spine & body] += 0.05

    instances = []
    for spec in specs:
        label = spec["label"]
        side = spec.get("side") or (None if label == "cardiomegaly" else SIDES[rng.integers(2)])
        sz = spec.get("size") or SIZES[rng.integers(2)]
        zone = spec.get("zone") if label in ("nodule", "opacity") else None
        if label in ("nodule", "opacity") and zone is None:
            zone = ZONES[rng.integers(3)]
        if label == "cardiomegaly":
            mask = heart
        elif label == "effusion":
            lung = lungs[side]
            lateral = -1.0 if side == "right" else 1.0
            height = rng.uniform(0.07, 0.11) if sz == "small" else rng.uniform(0.16, 0.24)
            level = dome[side] + 0.06 - height
            # meniscus: the fluid climbs the lateral chest wall
            meniscus = level - 0.10 * np.clip((u - lung_cx[side]) * lateral / lung_w, 0, None) ** 2
            mask = lung & (v > meniscus)
            image[mask] = 0.5 + 0.02 * markings[mask]
        elif label == "pneumothorax":
            lung = lungs[side]
            depth = rng.uniform(0.10, 0.16) if sz == "small" else rng.uniform(0.22, 0.32)
            upper = v < lung_top + (0.30 if sz == "small" else 0.45) * (dome[side] - lung_top)
            mask = lung & (lung_r[side] > 1 - depth) & upper
            line = lung & (lung_r[side] > 1 - depth - 0.06) & (lung_r[side] <= 1 - depth) & upper
            image[mask] = 0.07 + 0.01 * markings[mask]
            image[line] = 0.42
        elif label == "nodule":
            lung = lungs[side]
            zone_v = {"upper": 0.30, "mid": 0.45, "lower": 0.58}[zone] + rng.uniform(-0.03, 0.03)
            row = np.clip(int(zone_v * H), 0, H - 1)
            cols = np.nonzero(lung[row])[0]
            if len(cols) == 0:
                cols = np.array([int(lung_cx[side] * W)])
            lo, hi = int(np.percentile(cols, 20)), int(np.percentile(cols, 80))
            col = rng.integers(lo, max(hi, lo + 1))
            radius = (rng.uniform(0.022, 0.03) if sz == "small" else rng.uniform(0.04, 0.055)) * size
            d2 = ((u * W - 0.5 - col) ** 2 + (v * H - 0.5 - row) ** 2) / radius ** 2
            blob = np.exp(-0.5 * d2 ** 2)   # a flat-topped round profile
            image += 0.4 * blob
            mask = d2 <= 1.0
        else:  # opacity: lobar airspace opacity in one zone
            lung = lungs[side]
            bounds = {"upper": (0.0, 0.37), "mid": (0.37, 0.52), "lower": (0.52, 1.0)}[zone]
            extent = 1.0 if sz == "large" else 0.65
            span = (dome[side] - lung_top)
            top = lung_top + (0.0 if zone == "upper" else (bounds[0] - 0.14) / 0.56 * span)
            bot = lung_top + (min(bounds[1], 0.95) - 0.14) / 0.56 * span
            region = lung & (v >= top) & (v < bot)
            if extent < 1.0:
                lateral = -1.0 if side == "right" else 1.0
                region &= (u - lung_cx[side]) * lateral > -0.4 * lung_w
            patch = np.clip(0.55 + 0.45 * _smooth_noise(rng, (H, W), sigma=1.5), 0, 1)
            mask = region & (patch > 0.25)
            image[mask] += 0.26 * patch[mask]
        instances.append(FindingInstance(label, _box(mask), side, sz, zone))

    image += noise * rng.standard_normal((H, W))
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return CXRPhantom(image=image, findings=instances, ctr=float(ctr))


def sample_findings(rng, p_normal: float = 0.4, weights=None, max_findings: int = 2) -> list[str]:
    """Draw a set of finding names: none with probability ``p_normal``, else 1..max_findings
    different ones with ``weights`` (default: equal)."""
    if rng.random() < p_normal:
        return []
    w = np.ones(len(CXR_FINDINGS)) if weights is None else np.asarray([weights.get(f, 0.0) for f in CXR_FINDINGS], float)
    w = w / w.sum()
    k = 1 + int(rng.integers(max_findings))
    k = min(k, int((w > 0).sum()))
    chosen = rng.choice(len(CXR_FINDINGS), size=k, replace=False, p=w)
    return [CXR_FINDINGS[i] for i in sorted(chosen)]


# ----------------------------------------------------------------------------------------------
# Real sentences
# ----------------------------------------------------------------------------------------------

# Sentences that talk about a prior study, measurements or other diseases do not fit a phantom.
_EXCLUDE = re.compile(
    r"\b(?:stable|unchanged|redemonstrat\w*|recurrent|residual|clearing|again|prior|previous\w*|comparison|"
    r"compared|increas\w*|decreas\w*|improv\w*|interval|new|newly|persist\w*|calcifi\w*|granulom\w*|"
    r"histoplasm\w*|decubitus|lateral|consistent|compatible|worrisome|neoplasm|metasta\w*|only|near|"
    r"approximately|measur\w*|tube|catheter|chronic|known|since|remain\w*|resolv\w*|xxxx|collapse|"
    r"expanded|clear|represent\w*|also|another|presum\w*|dominant|multiple|scattered|streaky|than|"
    r"larger|bibasilar|bilateral\w*|both|hilar|perihilar|retrocardiac|mediastinal|thickening|"
    r"obscur\w*|likely|may|possibl\w*|probabl\w*|cardiomediastinal|pulmonary vascular\w*|emphysema\w*|"
    r"hyperinflat\w*|fracture\w*|hernia|aort\w*|spine|degenerative|scoliosis|osseous|bony|granuloma|above|detailed|"
    r"developed|uncertain|identity|otherwise|the present|hemopneumothorax|hydropneumothorax)\b")
_NUMBER = re.compile(r"\d")
_TOPIC_WORDS = {
    "heart": re.compile(r"\b(?:heart|cardiac|cardiomediastinal|cardio mediastinal|mediastinum|mediastinal)\b"),
    "lungs": re.compile(r"\b(?:lungs?|pulmonary|airspace|consolidation|parenchyma)\b"),
    "pleura": re.compile(r"\b(?:pleural|effusions?|pneumothora(?:x|ces))\b"),
    "impression": re.compile(r"\bno acute (?:cardiopulmonary|disease|pulmonary|findings?|abnormalit)"),
}
_OTHER_FINDINGS = re.compile(
    r"\b(?:xxxx|emphysema\w*|hyperinflat\w*|granulom\w*|calcifi\w*|scar\w*|fibros\w*|degenerative|spine|"
    r"osseous|bony|bones?|fracture\w*|aort\w*|hernia|tortuous|volumes?|hilar|hila|vascular\w*|"
    r"vasculature|trachea|atelecta\w*|edema|congestion|interstitial|thickening|comparison|prior|"
    r"stable|unchanged|chest|mass|nodul\w*|opacit\w*|pneumonia|infiltrate|density|air|chf|effusions? or|size|"
    r"silhouette|contours?)\b")
_SIDE_RE = {"right": re.compile(r"\bright\b"), "left": re.compile(r"\bleft\b|\blingul\w*")}
_ZONE_RE = {"upper": re.compile(r"\b(?:upper|apex|apical|apices)\b"),
            "mid": re.compile(r"\b(?:mid|midlung|middle|lingul\w*)\b"),
            "lower": re.compile(r"\b(?:lower|base|basilar|basal|basal)\b")}
_SIZE_RE = {"small": re.compile(r"\b(?:small|mild|minimal|trace|tiny|slight)\b"),
            "large": re.compile(r"\b(?:large|moderate\w*|severe|marked|massive|extensive)\b")}


def _attributes(sentence: str) -> dict:
    low = sentence.lower()
    attrs = {}
    sides = [s for s, rx in _SIDE_RE.items() if rx.search(low)]
    if len(sides) == 1:
        attrs["side"] = sides[0]
    zones = [z for z, rx in _ZONE_RE.items() if rx.search(low)]
    if len(zones) == 1:
        attrs["zone"] = zones[0]
    sizes = [s for s, rx in _SIZE_RE.items() if rx.search(low)]
    if len(sizes) == 1:
        attrs["size"] = sizes[0]
    return attrs


class CXRSentenceBank:
    """Real IU report sentences by topic, chosen with :mod:`dlmi.text.labeller`.

    ``bank.positive[finding]`` — ``[(sentence, attributes)]``, sentences positive for ``finding``
    alone (attributes parsed from the words: side, size, zone), most frequent first;
    ``bank.normal[topic]`` — ``[sentence]`` for topics "heart", "lungs", "pleura", "impression";
    ``bank.negative[finding]`` — sentences that only deny ``finding`` (e.g. "No pneumothorax.").

    ``max_per_topic`` keeps the most frequent sentences of each list (a small vocabulary trains fast
    on a CPU; raise it for more varied reports).
    """

    def __init__(self, reports=None, max_per_topic: int = 6, max_words: int = 12):
        from ..text.labeller import label_report
        from .iu_reports import load_iu_reports

        df = load_iu_reports() if reports is None else reports
        counts: Counter = Counter()
        spelling = {}
        for text in (df["findings"] + " " + df["impression"]).tolist():
            for s in re.split(r"(?<=[.!?])\s+", text.strip()):
                s = s.strip()
                key = s.lower().rstrip(".")
                if not s or len(s.split()) > max_words or len(s.split()) < 2 or _NUMBER.search(s):
                    continue
                counts[key] += 1
                spelling.setdefault(key, s if s.endswith(".") else s + ".")
        self.positive = {f: [] for f in CXR_FINDINGS}
        self.negative = {f: [] for f in ("effusion", "pneumothorax")}
        self.normal = {topic: [] for topic, _ in REPORT_TOPICS}
        for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            sentence = spelling[key]
            labels = label_report(sentence)
            positives = [f for f, status in labels.items() if status != 0]
            if positives:
                f = positives[0]
                if len(positives) == 1 and f in self.positive and not _EXCLUDE.search(key) \
                        and all(status == 1 for status in labels.values()):
                    if f == "nodule" and "nodule" not in key:
                        continue
                    attrs = _attributes(key)
                    if f in ("effusion", "pneumothorax", "nodule", "opacity") and "side" not in attrs:
                        continue  # the image must show one side; a sentence must say which
                    self.positive[f].append((sentence, attrs))
                continue
            if "normal" in key and ("abnormal" in key and "no " not in key):
                continue
            topics = [t for t, rx in _TOPIC_WORDS.items() if rx.search(key)]
            negated = set(labels)
            if len(topics) != 1 or not key.split()[0].isalpha():
                continue
            topic = topics[0]
            if topic == "pleura":
                if negated <= {"effusion", "pneumothorax"} and not _OTHER_FINDINGS.search(key.replace("pleural", "")):
                    if negated == {"effusion", "pneumothorax"}:
                        self.normal["pleura"].append(sentence)
                    elif len(negated) == 1 and re.fullmatch(r"(?:there is )?no (?:\w+ )?(?:pleural effusions?|pneumothorax)", key):
                        self.negative[next(iter(negated))].append(sentence)
            elif topic == "heart":
                if not negated and re.search(r"\b(?:normal|unremarkable|within normal limits)\b", key) \
                        and not re.search(r"\b(?:lungs?|pulmonary|bony|osseous|xxxx|aort\w*|hil\w*|vascular\w*|stable|contours?|silhouette|mediastin\w*|cardiomediastinal)\b", key):
                    self.normal["heart"].append(sentence)
            elif topic == "lungs":
                if negated <= {"opacity"} and re.search(r"\bclear\b", key) and not re.search(
                        r"\b(?:xxxx|heart|hyperinflat\w*|emphysema|volumes?|expanded|bilaterally|interval|stable|focal|without|otherwise)\b", key):
                    self.normal["lungs"].append(sentence)
            elif topic == "impression":
                if not negated and not re.search(r"\b(?:xxxx|since|change|interval|radiographic|evidence|identified|seen|process)\b", key):
                    self.normal["impression"].append(sentence)
        for store in (self.positive, self.negative, self.normal):
            for k in store:
                store[k] = store[k][:max_per_topic]
        empty = [k for store in (self.positive, self.normal, self.negative) for k, v in store.items() if not v]
        if empty:
            raise RuntimeError(f"no usable IU sentences for {empty}; is the report archive complete?")

    def __repr__(self):
        sizes = {k: len(v) for k, v in {**self.positive, **self.normal}.items()}
        return f"CXRSentenceBank({sizes})"

    def choose(self, finding: str, rng) -> tuple[str, dict]:
        """A random positive sentence for ``finding`` and the phantom attributes it implies."""
        options = self.positive[finding]
        sentence, attrs = options[int(rng.integers(len(options)))]
        return sentence, dict(attrs)

    def report(self, chosen: dict, rng) -> str:
        """Assemble a report: per topic, the chosen positive sentences or a normal one.

        ``chosen`` maps finding -> its positive sentence. Order: heart, lungs, pleura, impression
        (the impression line "No acute cardiopulmonary abnormality." only for a normal study).
        """
        pick = lambda options: options[int(rng.integers(len(options)))]
        parts = []
        for topic, findings in REPORT_TOPICS:
            present = [chosen[f] for f in findings if f in chosen]
            if topic == "impression":
                if not chosen:
                    parts.append(pick(self.normal["impression"]))
            elif not present:
                parts.append(pick(self.normal[topic]))
            else:
                parts.extend(present)
                if topic == "pleura" and len(present) == 1:
                    missing = "pneumothorax" if "effusion" in chosen else "effusion"
                    parts.append(pick(self.negative[missing]))
        return " ".join(parts)


@lru_cache(maxsize=4)
def _default_bank(max_per_topic: int, max_words: int) -> CXRSentenceBank:
    return CXRSentenceBank(max_per_topic=max_per_topic, max_words=max_words)


def _spec_from_attrs(label: str, attrs: dict) -> dict:
    spec = {"label": label}
    for key in ("side", "size", "zone"):
        if key in attrs and (key != "zone" or label in ("nodule", "opacity")):
            spec[key] = attrs[key]
    return spec


class CXRReportDataset:
    """``n`` phantom radiographs, each with a report of real IU sentences that state its findings.

    ``dataset[i]`` -> ``(image (1, H, W) float32 tensor, report str, labels list[str])``.
    Attributes: ``images`` (N, 1, H, W) tensor, ``reports``, ``labels``, ``phantoms`` (with boxes);
    ``target(i)`` gives the detection target. Deterministic from ``seed``; building 2,000 64×64
    cases takes a few seconds.

    Parameters: ``size`` (pixels), ``p_normal`` (share of normal studies), ``weights`` (relative
    frequency of each finding), ``max_findings`` per study, ``bank`` (a :class:`CXRSentenceBank`;
    default: the 6 most frequent sentences per topic, at most 12 words each).
    """

    def __init__(self, n: int = 1000, size: int = 64, seed: int = 0, p_normal: float = 0.35, weights=None,
                 max_findings: int = 2, bank: CXRSentenceBank | None = None, noise: float = 0.03):
        import torch

        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self.bank = bank if bank is not None else _default_bank(6, 12)
        rng = np.random.default_rng(seed)
        self.phantoms, self.reports = [], []
        for _ in range(int(n)):
            names = sample_findings(rng, p_normal, weights, max_findings)
            chosen, specs = {}, []
            for name in names:
                sentence, attrs = self.bank.choose(name, rng)
                chosen[name] = sentence
                specs.append(_spec_from_attrs(name, attrs))
            phantom = make_cxr_phantom(specs, size=size, rng=rng, noise=noise)
            phantom.report = self.bank.report(chosen, rng)
            self.phantoms.append(phantom)
            self.reports.append(phantom.report)
        self.labels = [p.labels for p in self.phantoms]
        self.images = torch.from_numpy(np.stack([p.image for p in self.phantoms]))[:, None]

    def __len__(self) -> int:
        return len(self.phantoms)

    def __getitem__(self, i):
        return self.images[i], self.reports[i], self.labels[i]

    def target(self, i) -> dict:
        return self.phantoms[i].target()

    def label_matrix(self):
        """(N, 5) 0/1 float32 matrix over CXR_FINDINGS."""
        out = np.zeros((len(self), len(CXR_FINDINGS)), dtype=np.float32)
        for i, labels in enumerate(self.labels):
            for label in labels:
                out[i, CXR_FINDINGS.index(label)] = 1
        return out
