"""NIH ChestX-ray14: the study table and the expert bounding boxes, read from the torchxrayvision wheel.

Source: Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. "ChestX-ray8: Hospital-scale chest
X-ray database and benchmarks on weakly-supervised classification and localization of common
thorax diseases." CVPR 2017, pp. 3462-3471. Data provider: the NIH Clinical Center
(https://nihcc.app.box.com/v/ChestXray-NIHCC). The ``torchxrayvision`` wheel ships the study table
``data/Data_Entry_2017_v2020.csv.gz`` (the 2020 revision, with corrected ages and chronological
follow-up numbers) and the box list ``data/BBox_List_2017.csv.gz``.

Licence: the NIH Clinical Center places no restrictions on use; it asks users to link the NIH
download site, cite Wang et al. (CVPR 2017) and acknowledge the NIH Clinical Center as the data
provider. (torchxrayvision itself is Apache-2.0 and states no separate licence for these files.)

What the table holds: 112,120 frontal radiographs of 30,805 patients. Each row is one image with
up to 14 findings text-mined from its (unreleased) report, "No Finding" otherwise; the patient's
follow-up number (0, 1, 2, ... in chronological order), age in years, sex, view (PA/AP), the
original image size and pixel spacing. There are **no dates**: the follow-up number is the only
order, and ages (whole years) are the only clock. The box list holds 984 boxes drawn by
radiologists on 880 images for 8 findings, in the coordinates of the 1024x1024 images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._package_files import package_file, verify_file
from .iu_reports import multi_hot

NIH_TABLE_FILE = "data/Data_Entry_2017_v2020.csv.gz"
NIH_BBOX_FILE = "data/BBox_List_2017.csv.gz"

# Published figures (Wang 2017; NIH release notes) the parsers are tested against.
NIH_STUDY_COUNT = 112_120
NIH_PATIENT_COUNT = 30_805
NIH_BOX_COUNT = 984
NIH_IMAGE_SIZE = 1024  # the released PNGs are 1024x1024; boxes are in their pixels

# The 14 findings in the order of Wang 2017 / CheXNet, then the "No Finding" label.
NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
                "Pleural_Thickening", "Hernia")
NIH_LABELS = NIH_FINDINGS + ("No Finding",)
# The 8 findings with expert boxes (the original ChestX-ray8 set).
NIH_BOX_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                    "Pneumonia", "Pneumothorax")

_TABLE_COLUMNS = ("image", "findings_text", "follow_up", "patient_id", "age", "sex", "view",
                  "original_width", "original_height", "pixel_spacing_x", "pixel_spacing_y")
NIH_TABLE_COLUMNS = ("image", "patient_id", "follow_up", "age", "sex", "view", "findings",
                     *NIH_LABELS, "original_width", "original_height",
                     "pixel_spacing_x", "pixel_spacing_y")
NIH_BBOX_COLUMNS = ("image", "patient_id", "follow_up", "finding", "x1", "y1", "x2", "y2",
                    "image_width", "image_height")


def _resolve(path, relative: str, verify: bool) -> Path:
    if path is None:
        return package_file("torchxrayvision", relative, verify=verify)
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or Path to {Path(relative).name}, got {type(path).__name__}")
    path = Path(path)
    if verify:
        return verify_file(path, "torchxrayvision", relative)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected a copy of {Path(relative).name})")
    return path


def _read_csv(path: Path, n_columns: int, names) -> pd.DataFrame:
    # The headers contain commas inside brackets ("OriginalImage[Width,Height]", "Bbox [x,y,w,h]"),
    # so we name the columns ourselves and check the field count instead of trusting the header.
    try:
        frame = pd.read_csv(path, header=0, names=None, compression="infer")
    except (OSError, EOFError, ValueError, pd.errors.ParserError) as err:
        raise FileNotFoundError(f"{path} could not be read as a gzipped CSV ({err}); it is corrupt or "
                                f"truncated. Reinstall with `pip install torchxrayvision "
                                f"--force-reinstall --no-deps`.") from err
    if frame.shape[1] < n_columns:
        raise ValueError(f"{path}: expected at least {n_columns} columns, found {frame.shape[1]}: "
                         f"{list(frame.columns)}")
    frame = frame.iloc[:, :n_columns]
    frame.columns = list(names)
    return frame


def load_nih_table(path: str | Path | None = None, verify: bool = True) -> pd.DataFrame:
    """The ChestX-ray14 study table, one row per image, sorted by (patient_id, follow_up).

    Columns:
      image (str, "00000001_000.png"), patient_id (int), follow_up (int, 0 = first study;
      chronological in this 2020 table, unlike the number in the file name),
      age (int, years), sex ("M"/"F"), view ("PA"/"AP"),
      findings (list[str]: names from NIH_LABELS; ["No Finding"] when none),
      one 0/1 uint8 column per label in NIH_LABELS (the 14 findings, then "No Finding"),
      original_width, original_height (int, pixels of the original scan before resizing to 1024),
      pixel_spacing_x, pixel_spacing_y (float, mm per pixel of the original scan).
    """
    file = _resolve(path, NIH_TABLE_FILE, verify)
    raw = _read_csv(file, len(_TABLE_COLUMNS), _TABLE_COLUMNS)
    findings = raw["findings_text"].astype(str).str.split("|")
    unknown = set(findings.explode()) - set(NIH_LABELS)
    if unknown:
        raise ValueError(f"{file}: unknown finding labels {sorted(unknown)}; expected names from {NIH_LABELS}")
    hot = multi_hot(findings, NIH_LABELS).astype(np.uint8)
    table = pd.DataFrame({
        "image": raw["image"].astype(str),
        "patient_id": raw["patient_id"].astype(np.int64),
        "follow_up": raw["follow_up"].astype(np.int64),
        "age": raw["age"].astype(np.int64),
        "sex": raw["sex"].astype(str),
        "view": raw["view"].astype(str),
        "findings": findings,
    })
    for j, label in enumerate(NIH_LABELS):
        table[label] = hot[:, j]
    for column in ("original_width", "original_height"):
        table[column] = raw[column].astype(np.int64)
    for column in ("pixel_spacing_x", "pixel_spacing_y"):
        table[column] = raw[column].astype(np.float64)
    table = table.sort_values(["patient_id", "follow_up"], kind="stable").reset_index(drop=True)
    return table[list(NIH_TABLE_COLUMNS)]


def load_nih_bboxes(path: str | Path | None = None, verify: bool = True) -> pd.DataFrame:
    """The 984 expert boxes, one row per box, in the pixels of the 1024x1024 images.

    Columns: image (str), patient_id (int), follow_up (int, the number in the file name),
    finding (str, one of NIH_BOX_FINDINGS; the source's "Infiltrate" is renamed "Infiltration"
    to match the table), x1, y1, x2, y2 (float, xyxy pixels, torchvision convention),
    image_width, image_height (int, 1024).
    """
    file = _resolve(path, NIH_BBOX_FILE, verify)
    raw = _read_csv(file, 6, ("image", "finding", "x", "y", "w", "h"))
    finding = raw["finding"].astype(str).replace({"Infiltrate": "Infiltration"})
    unknown = set(finding) - set(NIH_BOX_FINDINGS)
    if unknown:
        raise ValueError(f"{file}: unknown box findings {sorted(unknown)}; expected {NIH_BOX_FINDINGS}")
    image = raw["image"].astype(str)
    x, y = raw["x"].astype(np.float64), raw["y"].astype(np.float64)
    w, h = raw["w"].astype(np.float64), raw["h"].astype(np.float64)
    if ((w <= 0) | (h <= 0)).any():
        raise ValueError(f"{file}: boxes with non-positive width or height")
    return pd.DataFrame({
        "image": image,
        # File names are <patient id, 8 digits>_<follow-up, 3 digits>.png.
        "patient_id": image.str.slice(0, 8).astype(np.int64),
        "follow_up": image.str.slice(9, 12).astype(np.int64),
        "finding": finding,
        "x1": x, "y1": y, "x2": x + w, "y2": y + h,
        "image_width": NIH_IMAGE_SIZE, "image_height": NIH_IMAGE_SIZE,
    }, columns=list(NIH_BBOX_COLUMNS))


def nih_label_matrix(table: pd.DataFrame, labels=NIH_FINDINGS) -> np.ndarray:
    """(N, len(labels)) float32 multi-hot targets from a load_nih_table() frame."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be the DataFrame from load_nih_table(), got {type(table).__name__}")
    missing = [label for label in labels if label not in table.columns]
    if missing:
        raise ValueError(f"table has no columns {missing}; expected labels from {NIH_LABELS}")
    return table[list(labels)].to_numpy(dtype=np.float32)


def nih_patient_sequences(table: pd.DataFrame | None = None, min_visits: int = 1,
                          labels=NIH_LABELS) -> list[dict]:
    """Per-patient visit sequences for longitudinal (EHR-style) models, sorted by patient_id.

    The table has no dates, so the visit order is the follow-up number and the only clock is the
    patient's age in whole years: ``age_gap`` (years since the previous visit, 0 for the first)
    is a coarse time gap, often 0 for visits within the same year. Each item is a dict:

      patient_id (int), sex ("M"/"F"), n_visits (int T),
      follow_up (int64 array (T,), 0..T-1), age (int64 (T,)), age_gap (float32 (T,)),
      view (list[str] of "PA"/"AP"), images (list[str]),
      findings (list of T lists of label names),
      labels (float32 array (T, len(labels)), multi-hot over ``labels``; default NIH_LABELS).

    ``min_visits`` keeps patients with at least that many studies (2 for next-visit prediction:
    13,302 patients). Pass ``table`` to reuse a frame already loaded (it must have the columns of
    load_nih_table()).
    """
    if isinstance(min_visits, bool) or not isinstance(min_visits, (int, np.integer)) or min_visits < 1:
        raise ValueError(f"min_visits must be an int >= 1, got {min_visits!r}")
    if table is None:
        table = load_nih_table()
    elif not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be the DataFrame from load_nih_table() or None, got {type(table).__name__}")
    needed = {"image", "patient_id", "follow_up", "age", "sex", "view", "findings"}
    if not needed <= set(table.columns):
        raise ValueError(f"table lacks columns {sorted(needed - set(table.columns))}")
    hot = nih_label_matrix(table, labels)
    order = np.lexsort((table["follow_up"].to_numpy(), table["patient_id"].to_numpy()))
    pid = table["patient_id"].to_numpy()[order]
    follow = table["follow_up"].to_numpy()[order]
    age = table["age"].to_numpy()[order]
    sex = table["sex"].to_numpy()[order]
    view = table["view"].to_numpy()[order]
    image = table["image"].to_numpy()[order]
    findings = table["findings"].to_numpy()[order]
    hot = hot[order]
    # Split the sorted rows at patient boundaries instead of a groupby: one pass, no Python per row.
    first = np.r_[True, pid[1:] != pid[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(pid)]
    age = age.astype(np.int64)
    gap = np.where(first, 0, np.diff(age, prepend=age[:1])).astype(np.float32)
    sequences = []
    for s, e in zip(starts, ends):
        if e - s < min_visits:
            continue
        sequences.append({
            "patient_id": int(pid[s]),
            "sex": str(sex[s]),
            "n_visits": int(e - s),
            "follow_up": follow[s:e].astype(np.int64),
            "age": age[s:e],
            "age_gap": gap[s:e],
            "view": list(view[s:e]),
            "images": list(image[s:e]),
            "findings": [list(f) for f in findings[s:e]],
            "labels": hot[s:e],
        })
    return sequences
