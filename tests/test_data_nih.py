"""dlmi.data.nih: the ChestX-ray14 table, its expert boxes and per-patient visit sequences."""
import gzip

import numpy as np
import pytest

from dlmi.data.nih import (NIH_BBOX_COLUMNS, NIH_BOX_FINDINGS, NIH_FINDINGS, NIH_LABELS,
                           NIH_TABLE_COLUMNS, NIH_TABLE_FILE, load_nih_bboxes, load_nih_table,
                           nih_label_matrix, nih_patient_sequences)


pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def table():
    return load_nih_table()


@pytest.fixture(scope="module")
def boxes():
    return load_nih_bboxes()


def test_published_counts(table):
    # Wang 2017 / NIH release: 112,120 frontal images of 30,805 patients, 14 findings.
    assert len(table) == 112_120
    assert table["patient_id"].nunique() == 30_805
    assert table["image"].is_unique
    assert tuple(table.columns) == NIH_TABLE_COLUMNS
    assert len(NIH_FINDINGS) == 14 and NIH_LABELS[-1] == "No Finding"


def test_label_counts_and_multi_hot_agree_with_lists(table):
    counts = table[list(NIH_LABELS)].sum()
    expected = {"No Finding": 60361, "Infiltration": 19894, "Effusion": 13317, "Atelectasis": 11559,
                "Nodule": 6331, "Mass": 5782, "Pneumothorax": 5302, "Consolidation": 4667,
                "Pleural_Thickening": 3385, "Cardiomegaly": 2776, "Emphysema": 2516, "Edema": 2303,
                "Fibrosis": 1686, "Pneumonia": 1431, "Hernia": 227}
    assert counts.to_dict() == expected
    from_lists = table["findings"].explode().value_counts()
    assert from_lists.to_dict() == expected
    no_finding = table["No Finding"] == 1
    assert (table.loc[no_finding, list(NIH_FINDINGS)].sum(axis=1) == 0).all()
    assert (table.loc[~no_finding, list(NIH_FINDINGS)].sum(axis=1) >= 1).all()
    matrix = nih_label_matrix(table)
    assert matrix.shape == (112_120, 14) and matrix.dtype == np.float32


def test_tidy_columns(table):
    assert table["view"].value_counts().to_dict() == {"PA": 67310, "AP": 44810}
    assert table["sex"].value_counts().to_dict() == {"M": 63340, "F": 48780}
    assert table["age"].between(0, 100).all()  # the 2020 table fixed the ages over 100
    assert table["original_width"].between(1000, 4000).all()
    assert table["pixel_spacing_x"].between(0.1, 0.2).all()
    first = table.iloc[1]
    assert first["image"] == "00000001_001.png" and first["findings"] == ["Cardiomegaly", "Emphysema"]
    assert (first["age"], first["sex"], first["view"]) == (58, "M", "PA")
    assert (first["original_width"], first["original_height"]) == (2894, 2729)


def test_follow_up_is_the_chronological_order(table):
    grouped = table.groupby("patient_id")["follow_up"]
    # follow-up numbers are 0..n-1 for every patient...
    assert (grouped.min() == 0).all() and (grouped.max() + 1 == grouped.size()).all()
    # ...and ages never decrease along them (they do along the number in the file name).
    assert (table.groupby("patient_id")["age"].diff().fillna(0) >= 0).all()


def test_bounding_boxes(boxes, table):
    assert len(boxes) == 984
    assert tuple(boxes.columns) == NIH_BBOX_COLUMNS
    assert set(boxes["finding"]) == set(NIH_BOX_FINDINGS) and len(NIH_BOX_FINDINGS) == 8
    assert boxes["finding"].value_counts().to_dict() == {
        "Atelectasis": 180, "Effusion": 153, "Cardiomegaly": 146, "Infiltration": 123,
        "Pneumonia": 120, "Pneumothorax": 98, "Mass": 85, "Nodule": 79}
    assert boxes["image"].nunique() == 880 and boxes["image"].isin(table["image"]).all()
    assert ((boxes["image_width"] == 1024) & (boxes["image_height"] == 1024)).all()
    assert (boxes["x2"] > boxes["x1"]).all() and (boxes["y2"] > boxes["y1"]).all()
    assert (boxes[["x1", "y1"]] >= 0).all().all() and (boxes[["x2", "y2"]] <= 1024).all().all()
    row = boxes.iloc[0]
    assert row["image"] == "00013118_008.png" and row["finding"] == "Atelectasis"
    assert row["x2"] == pytest.approx(225.084745762712 + 86.7796610169491)
    # Every box's finding is among the text-mined labels of its image.
    merged = boxes.merge(table[["image", "findings"]], on="image")
    assert merged.apply(lambda r: r["finding"] in r["findings"], axis=1).all()


def test_patient_sequences(table):
    everyone = nih_patient_sequences(table)
    assert len(everyone) == 30_805
    assert sum(p["n_visits"] for p in everyone) == 112_120
    repeat = [p for p in everyone if p["n_visits"] >= 2]
    assert len(repeat) == 13_302
    some = table[table["patient_id"] <= 3000]
    assert [p["patient_id"] for p in nih_patient_sequences(some, min_visits=2)] == \
        [p["patient_id"] for p in repeat if p["patient_id"] <= 3000]
    first = everyone[0]
    assert first["patient_id"] == 1 and first["n_visits"] == 3 and first["sex"] == "M"
    np.testing.assert_array_equal(first["follow_up"], [0, 1, 2])
    np.testing.assert_array_equal(first["age"], [57, 58, 58])
    np.testing.assert_array_equal(first["age_gap"], [0, 1, 0])
    assert first["findings"] == [["Cardiomegaly"], ["Cardiomegaly", "Emphysema"], ["Cardiomegaly", "Effusion"]]
    assert first["labels"].shape == (3, len(NIH_LABELS)) and first["labels"].dtype == np.float32
    assert first["labels"][:, NIH_LABELS.index("Cardiomegaly")].tolist() == [1, 1, 1]
    longest = max(everyone, key=lambda p: p["n_visits"])
    assert longest["n_visits"] == 184 and (np.diff(longest["follow_up"]) == 1).all()
    assert all(p["age_gap"][0] == 0 and (p["age_gap"] >= 0).all() for p in repeat[:500])
    only = nih_patient_sequences(some, labels=("Nodule", "Mass"))
    assert only[0]["labels"].shape == (3, 2)


def test_bad_arguments(table):
    with pytest.raises(ValueError, match="min_visits"):
        nih_patient_sequences(table, min_visits=0)
    with pytest.raises(ValueError, match="min_visits"):
        nih_patient_sequences(table, min_visits=True)
    with pytest.raises(TypeError, match="load_nih_table"):
        nih_patient_sequences(table=[1, 2])
    with pytest.raises(ValueError, match="lacks columns"):
        nih_patient_sequences(table[["image", "patient_id"]])
    with pytest.raises(ValueError, match="no columns"):
        nih_label_matrix(table, labels=("Dragon",))
    with pytest.raises(TypeError, match="str or Path"):
        load_nih_table(path=3.5)


def _write_gz(path, text):
    with gzip.open(path, "wt") as fh:
        fh.write(text)


HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")


def test_parsers_on_tiny_files_in_the_same_format(tmp_path):
    path = tmp_path / "tiny.csv.gz"
    _write_gz(path, HEADER + "00000007_001.png,Mass|Nodule,1,7,60,F,AP,2500,2048,0.168,0.168\n"
                             "00000007_000.png,No Finding,0,7,59,F,PA,2992,2991,0.143,0.143\n")
    tiny = load_nih_table(path, verify=False)
    assert tiny["follow_up"].tolist() == [0, 1]  # sorted by patient, then follow-up
    assert tiny.loc[1, "findings"] == ["Mass", "Nodule"]
    assert tiny.loc[1, ["Mass", "Nodule", "No Finding"]].tolist() == [1, 1, 0]
    boxes = tmp_path / "boxes.csv.gz"
    _write_gz(boxes, "Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000007_001.png,Infiltrate,10,20,30,40\n")
    box = load_nih_bboxes(boxes, verify=False).iloc[0]
    assert (box["finding"], box["x1"], box["y1"], box["x2"], box["y2"]) == ("Infiltration", 10, 20, 40, 60)
    assert (box["patient_id"], box["follow_up"]) == (7, 1)


def test_unknown_labels_and_broken_files_are_reported(tmp_path):
    path = tmp_path / "odd.csv.gz"
    _write_gz(path, HEADER + "00000007_000.png,Dragon,0,7,59,F,PA,2992,2991,0.143,0.143\n")
    with pytest.raises(ValueError, match="Dragon"):
        load_nih_table(path, verify=False)
    with pytest.raises(FileNotFoundError, match=r"odd\.csv\.gz.*corrupt.*pip install torchxrayvision"):
        load_nih_table(path)  # not the shipped file: the checksum says so
    from dlmi.data._package_files import package_file
    truncated = tmp_path / "Data_Entry_2017_v2020.csv.gz"
    data = package_file("torchxrayvision", NIH_TABLE_FILE).read_bytes()
    truncated.write_bytes(data[:5000])
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017_v2020.csv.gz"):
        load_nih_table(truncated, verify=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_nih_bboxes(tmp_path / "nothing.csv.gz", verify=False)
