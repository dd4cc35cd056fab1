"""Chest-radiograph phantoms (dlmi.data.cxr): determinism, controlled findings, boxes, real-sentence reports."""
import numpy as np
import pytest

from dlmi.data.cxr import CXR_FINDINGS, CXRReportDataset, make_cxr_phantom
from dlmi.text.labeller import findings_of


def test_deterministic_and_in_range():
    a = make_cxr_phantom(["nodule"], size=64, seed=3)
    b = make_cxr_phantom(["nodule"], size=64, seed=3)
    c = make_cxr_phantom(["nodule"], size=64, seed=4)
    assert a.image.shape == (64, 64) and a.image.dtype == np.float32
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0


def test_findings_change_the_image_where_their_box_is():
    normal = make_cxr_phantom([], size=64, seed=0, noise=0.0)
    for spec in ({"label": "effusion", "side": "left", "size": "large"},
                 {"label": "pneumothorax", "side": "right", "size": "large"},
                 {"label": "nodule", "side": "right", "zone": "upper", "size": "large"},
                 {"label": "opacity", "side": "left", "zone": "lower", "size": "large"}):
        sick = make_cxr_phantom([spec], size=64, seed=0, noise=0.0)
        (f,) = sick.findings
        x0, y0, x1, y1 = (int(round(v)) for v in f.box)
        assert x1 > x0 and y1 > y0, spec
        diff = np.abs(sick.image - normal.image)
        inside = diff[y0:y1, x0:x1].mean()
        assert inside > 0.05, (spec, inside)
        # the patient's left is on the image's right
        centre = (x0 + x1) / 2
        assert (centre > 32) == (spec["side"] == "left"), (spec, f.box)


def test_cardiomegaly_ratio_and_detection_target():
    big = make_cxr_phantom(["cardiomegaly"], seed=1)
    small = make_cxr_phantom([], seed=1)
    assert big.ctr > 0.54 and small.ctr < 0.48
    t = big.target()
    assert t["boxes"].shape == (1, 4) and t["labels"].tolist() == [1 + CXR_FINDINGS.index("cardiomegaly")]
    with pytest.raises(ValueError):
        make_cxr_phantom(["fracture"])
    with pytest.raises(ValueError):
        make_cxr_phantom([{"label": "nodule", "side": "middle"}])


def test_reports_are_real_sentences_that_state_the_findings():
    ds = CXRReportDataset(80, seed=0)
    image, report, labels = ds[0]
    assert tuple(image.shape) == (1, 64, 64) and isinstance(report, str)
    assert ds.images.shape == (80, 1, 64, 64)
    agree = 0
    for report, labels, phantom in zip(ds.reports, ds.labels, ds.phantoms):
        stated = set(findings_of(report)) & set(CXR_FINDINGS)
        agree += stated == set(labels)
        for f in phantom.findings:  # laterality in the text matches the drawn side
            if f.side is not None and f.label != "cardiomegaly":
                assert f.side in report.lower() or "left" not in report.lower() and "right" not in report.lower()
    assert agree == len(ds), f"labeller disagrees with the phantom on {len(ds) - agree} reports"
    all_sentences = {s for v in ds.bank.normal.values() for s in v} | \
        {s for v in ds.bank.positive.values() for s, _ in v} | {s for v in ds.bank.negative.values() for s in v}
    from dlmi.data import load_iu_reports
    corpus = " ".join((load_iu_reports()["findings"] + " " + load_iu_reports()["impression"]).tolist())
    assert all(s.rstrip(".") in corpus for s in all_sentences)
    again = CXRReportDataset(80, seed=0, bank=ds.bank)
    assert again.reports == ds.reports and bool((again.images == ds.images).all())
