"""The Indiana University chest X-ray reports, read in place from the torchxrayvision wheel.

Source: Demner-Fushman D, Kohli MD, Rosenman MB, et al. "Preparing a collection of radiology
examinations for distribution and retrieval." JAMIA 23(2):304-310, 2016 (doi:10.1093/jamia/ocv080).
Distributed by the NLM's Open-i service; the ``torchxrayvision`` wheel ships the 3,955 report XML
files as ``torchxrayvision/data/NLMCXR_reports.tgz``.

Licence: every report file carries ``<licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/``
(Creative Commons Attribution-NonCommercial-NoDerivatives 4.0): cite the paper, no commercial use,
no redistribution of modified reports. We parse the archive in memory and write nothing to disk.

Each report has four free-text sections (COMPARISON, INDICATION, FINDINGS, IMPRESSION; patient
details were replaced by ``XXXX`` during de-identification), MeSH terms assigned by human indexers
(``<major>``, e.g. ``"Cardiomegaly/mild"``: a heading then qualifiers separated by ``/``), terms
from an automatic indexer (``<automatic>``) and the ids of its images (``CXR1_1_IM-0001-3001``).
"""
from __future__ import annotations

import re
import tarfile
import xml.etree.ElementTree as ET
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ._package_files import package_file, verify_file

IU_REPORTS_FILE = "data/NLMCXR_reports.tgz"
IU_REPORT_COUNT = 3955  # reports in the archive (Demner-Fushman 2016, Table 1)

IU_REPORT_COLUMNS = ("report_id", "uid", "comparison", "indication", "findings", "impression",
                     "mesh_major", "mesh_automatic", "problems", "labels", "image_ids")

# The normalised finding labels, in a fixed order (the columns of :func:`iu_label_matrix`).
# Indexers wrote MeSH headings with qualifiers ("Lung/hypoinflation/mild", "Costophrenic
# Angle/left/blunted"); these rules fold the ~120 headings into the findings a radiologist would
# name, keeping only those frequent enough (tens to hundreds of reports) to learn from.
# Each rule: (label, headings, qualifier that must also appear or None).
_RULES = (
    ("normal", {"normal"}, None),
    ("cardiomegaly", {"cardiomegaly"}, None),
    ("cardiomegaly", {"cardiac shadow", "heart"}, "enlarged"),
    ("opacity", {"opacity", "density", "infiltrate"}, None),
    ("airspace disease", {"airspace disease", "consolidation", "pneumonia"}, None),
    ("atelectasis", {"pulmonary atelectasis", "volume loss"}, None),
    ("effusion", {"pleural effusion"}, None),
    ("effusion", {"costophrenic angle"}, "blunted"),
    ("edema", {"pulmonary edema", "pulmonary congestion", "heart failure"}, None),
    ("pneumothorax", {"pneumothorax", "hydropneumothorax", "hemopneumothorax"}, None),
    ("nodule", {"nodule", "mass"}, None),
    ("granuloma", {"calcified granuloma", "granulomatous disease", "granuloma"}, None),
    ("calcinosis", {"calcinosis"}, None),
    ("emphysema", {"emphysema", "pulmonary emphysema", "bullous emphysema",
                   "pulmonary disease, chronic obstructive"}, None),
    ("hyperinflation", {"lung"}, "hyperdistention"),
    ("hyperinflation", {"diaphragm"}, "flattened"),
    ("hypoinflation", {"lung"}, "hypoinflation"),
    ("scarring", {"cicatrix", "pulmonary fibrosis", "fibrosis"}, None),
    ("degenerative spine", {"spondylosis", "osteophyte"}, None),
    ("degenerative spine", {"thoracic vertebrae", "spine", "lumbar vertebrae"}, "degenerative"),
    ("scoliosis", {"scoliosis"}, None),
    ("fracture", {"fractures, bone"}, None),
    ("tortuous aorta", {"aorta", "aorta, thoracic"}, "tortuous"),
    ("atherosclerosis", {"atherosclerosis"}, None),
    ("hiatal hernia", {"hernia, hiatal"}, None),
    ("device", {"catheters, indwelling", "implanted medical device", "surgical instruments",
                "tube, inserted", "medical device", "stents"}, None),
)
IU_LABELS = tuple(dict.fromkeys(rule[0] for rule in _RULES))

_SPACES = re.compile(r"\s+")


def _clean(text: str | None) -> str:
    # The XML is pretty-printed; collapse runs of whitespace so texts compare and tokenize simply.
    return _SPACES.sub(" ", text or "").strip()


def _split_term(term: str) -> tuple[str, set[str]]:
    parts = [_clean(p).lower() for p in term.split("/")]
    return parts[0], set(parts[1:])


def iu_finding_labels(mesh_terms) -> list[str]:
    """Normalised finding labels of one report from its MeSH ``<major>`` terms, in IU_LABELS order.

    ``["Cardiomegaly/mild", "Pleural Effusion/right/small"]`` -> ``["cardiomegaly", "effusion"]``.
    ``["normal"]`` -> ``["normal"]``. Terms outside the vocabulary (e.g. "No Indexing",
    "Technical Quality of Image Unsatisfactory", rare headings) contribute nothing, so a report
    can have no label at all.
    """
    if isinstance(mesh_terms, str) or not hasattr(mesh_terms, "__iter__"):
        raise TypeError(f"mesh_terms must be a list of MeSH strings such as ['Cardiomegaly/mild'], "
                        f"got {type(mesh_terms).__name__}")
    found = set()
    for term in mesh_terms:
        if not isinstance(term, str):
            raise TypeError(f"each MeSH term must be a str, got {type(term).__name__}: {term!r}")
        head, qualifiers = _split_term(term)
        for label, headings, qualifier in _RULES:
            if head in headings and (qualifier is None or qualifier in qualifiers):
                found.add(label)
    return [label for label in IU_LABELS if label in found]


def multi_hot(label_lists, vocabulary) -> np.ndarray:
    """(N, len(vocabulary)) float32 0/1 matrix: row i marks the labels of ``label_lists[i]``.

    Labels not in ``vocabulary`` raise ValueError (a typo should not silently vanish).
    """
    vocabulary = list(vocabulary)
    index = {label: j for j, label in enumerate(vocabulary)}
    if len(index) != len(vocabulary):
        raise ValueError("vocabulary has duplicate labels")
    label_lists = list(label_lists)
    out = np.zeros((len(label_lists), len(vocabulary)), dtype=np.float32)
    for i, labels in enumerate(label_lists):
        if isinstance(labels, str):
            raise TypeError(f"row {i}: expected a list of labels, got the string {labels!r}")
        for label in labels:
            if label not in index:
                raise ValueError(f"row {i}: label {label!r} is not in the vocabulary {vocabulary}")
            out[i, index[label]] = 1.0
    return out


def iu_label_matrix(reports: pd.DataFrame) -> np.ndarray:
    """(N, len(IU_LABELS)) float32 multi-hot targets from the ``labels`` column of load_iu_reports()."""
    if not isinstance(reports, pd.DataFrame) or "labels" not in reports.columns:
        raise TypeError("reports must be the DataFrame returned by load_iu_reports() (needs a 'labels' column)")
    return multi_hot(reports["labels"], IU_LABELS)


def _parse_report(xml_bytes: bytes, name: str) -> dict:
    root = ET.fromstring(xml_bytes)
    sections = {el.get("Label", "").lower(): _clean(el.text) for el in root.iter("AbstractText")}
    uid_el = root.find("uId")
    iu_el = root.find("IUXRId")
    # The file name (ecgen-radiology/<n>.xml) and <IUXRId> carry the same number.
    number = iu_el.get("id") if iu_el is not None else Path(name).stem
    major = tuple(_clean(el.text) for el in root.iterfind("MeSH/major") if _clean(el.text))
    automatic = tuple(_clean(el.text) for el in root.iterfind("MeSH/automatic") if _clean(el.text))
    return {
        "report_id": int(number),
        "uid": uid_el.get("id") if uid_el is not None else f"CXR{number}",
        "comparison": sections.get("comparison", ""),
        "indication": sections.get("indication", ""),
        "findings": sections.get("findings", ""),
        "impression": sections.get("impression", ""),
        "mesh_major": major,
        "mesh_automatic": automatic,
        "image_ids": tuple(el.get("id") for el in root.iterfind("parentImage")),
    }


@lru_cache(maxsize=4)
def _parse_archive(path_str: str, size: int, mtime_ns: int) -> tuple[dict, ...]:
    records = []
    try:
        with tarfile.open(path_str, mode="r:gz") as archive:
            for member in archive:
                if not (member.isfile() and member.name.endswith(".xml")):
                    continue
                data = archive.extractfile(member).read()
                try:
                    records.append(_parse_report(data, member.name))
                except (ET.ParseError, ValueError) as err:
                    raise ValueError(f"{path_str}: report {member.name} is not valid report XML ({err})") from err
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise FileNotFoundError(
            f"{path_str} could not be read as a .tgz of report XML files ({err}); it is corrupt or "
            f"truncated. Reinstall with `pip install torchxrayvision --force-reinstall --no-deps`.") from err
    records.sort(key=lambda r: r["report_id"])
    return tuple(records)


def load_iu_reports(path: str | Path | None = None, verify: bool = True) -> pd.DataFrame:
    """All IU chest X-ray reports as a DataFrame, one row per report, sorted by ``report_id``.

    Columns:
      report_id (int, 1..3999 with gaps), uid (str, "CXR<report_id>"),
      comparison, indication, findings, impression (str; "" where the section is empty),
      mesh_major (list[str]: indexer MeSH terms, e.g. "Cardiomegaly/mild"; ["normal"] for normal),
      mesh_automatic (list[str]: terms of the automatic indexer),
      problems (list[str]: the MeSH headings of mesh_major without qualifiers, de-duplicated),
      labels (list[str]: normalised findings from :func:`iu_finding_labels`, vocabulary IU_LABELS),
      image_ids (list[str]: the report's images, usually a frontal and a lateral view).

    ``path`` reads another copy of ``NLMCXR_reports.tgz`` (default: the one in the installed
    torchxrayvision, located without importing it). ``verify`` checks the file's SHA-256 first.
    The archive is parsed once per process (about a second) and kept in memory.
    """
    if path is None:
        file = package_file("torchxrayvision", IU_REPORTS_FILE, verify=verify)
    else:
        if not isinstance(path, (str, Path)):
            raise TypeError(f"path must be a str or Path to NLMCXR_reports.tgz, got {type(path).__name__}")
        file = Path(path)
        if verify:
            verify_file(file, "torchxrayvision", IU_REPORTS_FILE)
        elif not file.is_file():
            raise FileNotFoundError(f"{file} does not exist (expected a copy of NLMCXR_reports.tgz)")
    stat = file.stat()
    records = _parse_archive(str(file), stat.st_size, stat.st_mtime_ns)
    rows = []
    for r in records:
        row = dict(r)
        # Fresh lists per call: the cached records stay immutable whatever callers do.
        for key in ("mesh_major", "mesh_automatic", "image_ids"):
            row[key] = list(r[key])
        row["problems"] = list(dict.fromkeys(_clean(t.split("/")[0]) for t in r["mesh_major"]))
        row["labels"] = iu_finding_labels(r["mesh_major"])
        rows.append(row)
    return pd.DataFrame(rows, columns=list(IU_REPORT_COLUMNS))


def iu_label_counts(reports: pd.DataFrame | None = None) -> pd.Series:
    """Number of reports carrying each IU_LABELS label (descending), e.g. for class weights."""
    reports = load_iu_reports() if reports is None else reports
    counts = iu_label_matrix(reports).sum(axis=0).astype(int)
    return pd.Series(counts, index=list(IU_LABELS), name="reports").sort_values(ascending=False)
