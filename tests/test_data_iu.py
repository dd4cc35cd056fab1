"""dlmi.data.iu_reports: the Indiana University reports parsed from the torchxrayvision wheel."""
import io
import shutil
import tarfile

import numpy as np
import pandas as pd
import pytest

from dlmi.data import iu_reports
from dlmi.data.iu_reports import (IU_LABELS, IU_REPORT_COLUMNS, iu_finding_labels, iu_label_counts,
                                  iu_label_matrix, load_iu_reports, multi_hot)


pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def reports():
    return load_iu_reports()


def test_count_and_columns_match_the_source(reports):
    # Demner-Fushman 2016: 3,955 reports and 7,470 images.
    assert len(reports) == 3955 == iu_reports.IU_REPORT_COUNT
    assert tuple(reports.columns) == IU_REPORT_COLUMNS
    assert reports["report_id"].is_unique and reports["report_id"].is_monotonic_increasing
    assert (reports["uid"] == "CXR" + reports["report_id"].astype(str)).all()
    assert reports["image_ids"].map(len).sum() == 7470


def test_first_reports_parsed_exactly(reports):
    first = reports.iloc[0]
    assert first["report_id"] == 1
    assert first["indication"] == "Positive TB test"
    assert first["comparison"] == "None."
    assert first["findings"].startswith("The cardiac silhouette and mediastinum size are within normal limits.")
    assert first["impression"] == "Normal chest x-XXXX."
    assert first["mesh_major"] == ["normal"] and first["labels"] == ["normal"]
    assert first["image_ids"] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    second = reports.set_index("report_id").loc[2]
    assert second["mesh_major"] == ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"]
    assert second["mesh_automatic"] == ["sternotomy"]
    assert second["problems"] == ["Cardiomegaly", "Pulmonary Artery"]
    assert second["labels"] == ["cardiomegaly"]


def test_text_is_clean_and_sections_can_be_empty(reports):
    for column in ("comparison", "indication", "findings", "impression"):
        text = reports[column]
        assert text.map(lambda s: isinstance(s, str)).all()
        assert not text.str.contains(r"\s\s|\n").any()  # whitespace collapsed
    # Some reports have no FINDINGS section (impression only): they are "" not None.
    assert 400 < (reports["findings"] == "").sum() < 700
    assert (reports["impression"] != "").sum() > 3900


def test_labels_normal_is_exclusive_and_every_label_is_learnable(reports):
    counts = iu_label_counts(reports)
    assert counts["normal"] == 1391  # reports whose only MeSH term is "normal"
    assert (counts >= 20).all(), counts[counts < 20]
    normal = reports["labels"].map(lambda labels: "normal" in labels)
    assert (reports.loc[normal, "labels"].map(len) == 1).all()
    matrix = iu_label_matrix(reports)
    assert matrix.shape == (3955, len(IU_LABELS)) and matrix.dtype == np.float32
    assert set(np.unique(matrix)) <= {0.0, 1.0}


@pytest.mark.parametrize("terms, expected", [
    (["normal"], ["normal"]),
    (["Cardiomegaly/mild", "Pleural Effusion/right/small"], ["cardiomegaly", "effusion"]),
    (["Costophrenic Angle/left/blunted"], ["effusion"]),
    (["Costophrenic Angle/left"], []),  # the qualifier decides
    (["Lung/hypoinflation/mild", "Lung/bilateral/hyperdistention"], ["hyperinflation", "hypoinflation"]),
    (["Thoracic vertebrae/degenerative", "Subcutaneous  Emphysema"], ["degenerative spine"]),
    (["No Indexing"], []),
    ([], []),
])
def test_finding_labels_from_mesh(terms, expected):
    assert iu_finding_labels(terms) == expected


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="list of MeSH"):
        iu_finding_labels("Cardiomegaly")
    with pytest.raises(TypeError, match="str"):
        iu_finding_labels([1])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        multi_hot([["cardiomegaly", "dragon"]], IU_LABELS)
    with pytest.raises(TypeError, match="list of labels"):
        multi_hot(["normal"], IU_LABELS)
    with pytest.raises(TypeError, match="load_iu_reports"):
        iu_label_matrix(pd.DataFrame({"x": [1]}))
    with pytest.raises(TypeError, match="str or Path"):
        load_iu_reports(path=42)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_iu_reports(path=tmp_path / "missing.tgz")


def test_multi_hot_marks_rows():
    out = multi_hot([["b"], [], ["a", "b"]], ["a", "b"])
    np.testing.assert_array_equal(out, [[0, 1], [0, 0], [1, 1]])


def test_callers_cannot_corrupt_the_cache(reports):
    fresh = load_iu_reports()
    fresh.loc[0, "findings"] = "edited"
    fresh.loc[0, "labels"].append("dragon")
    again = load_iu_reports()
    assert again.loc[0, "findings"] == reports.loc[0, "findings"]
    assert again.loc[0, "labels"] == ["normal"]


def _installed_tgz():
    from dlmi.data._package_files import package_file
    return package_file("torchxrayvision", iu_reports.IU_REPORTS_FILE)


def test_truncated_archive_names_the_file_and_the_fix(tmp_path):
    broken = tmp_path / "NLMCXR_reports.tgz"
    data = _installed_tgz().read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileNotFoundError, match=r"NLMCXR_reports\.tgz.*corrupt.*pip install torchxrayvision"):
        load_iu_reports(path=broken)
    # Without the checksum the archive reader itself notices, with the same kind of message.
    with pytest.raises(FileNotFoundError, match=r"corrupt or truncated.*pip install torchxrayvision"):
        load_iu_reports(path=broken, verify=False)


def test_a_faithful_copy_passes_the_checksum(tmp_path):
    from dlmi.data._package_files import verify_file
    copy = tmp_path / "copy.tgz"
    shutil.copyfile(_installed_tgz(), copy)
    assert verify_file(copy, "torchxrayvision", iu_reports.IU_REPORTS_FILE) == copy


def _report_xml(number, findings, impression, majors):
    mesh = "".join(f"<major>{m}</major>" for m in majors)
    return (f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{number}"/>'
            f'<IUXRId id="{number}"/><MedlineCitation><Article><Abstract>'
            f'<AbstractText Label="COMPARISON">None.</AbstractText>'
            f'<AbstractText Label="INDICATION">Cough</AbstractText>'
            f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
            f'<AbstractText Label="IMPRESSION">{impression}</AbstractText>'
            f'</Abstract></Article></MedlineCitation><MeSH>{mesh}</MeSH>'
            f'<parentImage id="CXR{number}_IM-1"/></eCitation>').encode()


def test_parser_on_a_tiny_archive_in_the_same_format(tmp_path):
    path = tmp_path / "tiny.tgz"
    with tarfile.open(path, "w:gz") as archive:
        for number, xml in [(12, _report_xml(12, "", "No acute   disease.", ["normal"])),
                            (3, _report_xml(3, "Large right\n effusion.", "Effusion.",
                                            ["Pleural Effusion/right/large", "Opacity/lung/base"]))]:
            info = tarfile.TarInfo(f"ecgen-radiology/{number}.xml")
            info.size = len(xml)
            archive.addfile(info, io.BytesIO(xml))
    tiny = load_iu_reports(path=path, verify=False)
    assert tiny["report_id"].tolist() == [3, 12]
    assert tiny.loc[0, "findings"] == "Large right effusion."
    assert tiny.loc[0, "labels"] == ["opacity", "effusion"]
    assert tiny.loc[0, "problems"] == ["Pleural Effusion", "Opacity"]
    assert tiny.loc[1, "findings"] == "" and tiny.loc[1, "impression"] == "No acute disease."
    with pytest.raises(FileNotFoundError, match="corrupt"):
        load_iu_reports(path=path)  # a checksum for the real archive does not match a fixture


def test_invalid_xml_in_archive_names_the_member(tmp_path):
    path = tmp_path / "bad.tgz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("ecgen-radiology/7.xml")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"<oops"))
    with pytest.raises(ValueError, match="7.xml"):
        load_iu_reports(path=path, verify=False)
