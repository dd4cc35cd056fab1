"""dlmi.data.samples and dlmi.data._package_files: real samples read offline, files found in place."""

import numpy as np
import pytest

from dlmi.data import _package_files as pf
from dlmi.data import samples


pytestmark = pytest.mark.usefixtures("no_network")


def test_skimage_medical_images_load_offline():
    retina = samples.retina()
    assert retina.shape == (1411, 1411, 3) and retina.dtype == np.uint8
    lesions = samples.microaneurysms()
    assert lesions.shape == (102, 102) and lesions.dtype == np.uint8 and lesions.std() > 5
    ihc = samples.immunohistochemistry()
    assert ihc.shape == (512, 512, 3) and ihc.dtype == np.uint8


def test_dicom_ct_slice_in_hounsfield_units():
    hu, meta = samples.ct_slice()
    assert hu.shape == (128, 128) and hu.dtype == np.float32
    assert meta["modality"] == "CT" and meta["rescale_intercept"] == -1024
    assert meta["pixel_spacing"] == pytest.approx((0.661468, 0.661468)) and meta["slice_thickness"] == 5.0
    assert hu.min() == pytest.approx(-896) and hu.max() == pytest.approx(1167)
    assert "PatientName" not in meta and "patient_name" not in meta
    mr, meta = samples.dicom_sample("MR_small.dcm")
    assert mr.shape == (64, 64) and meta["modality"] == "MR"


def test_pydicom_bundles_the_file_we_read():
    # pydicom.data.get_testdata_file falls back to a download for files it does not bundle; the
    # two we offer are bundled, so it returns the very path we read (with the network refused).
    from pydicom.data import get_testdata_file
    for name in samples.DICOM_SAMPLES:
        assert get_testdata_file(name) == samples.dicom_sample(name)[1]["path"]


def test_nifti_volumes():
    anatomy, meta = samples.nifti_sample()
    assert anatomy.shape == (33, 41, 25) == meta["shape"] and anatomy.dtype == np.float32
    assert meta["zooms"] == (2.0, 2.0, 2.0) and meta["affine"].shape == (4, 4)
    run, meta = samples.nifti_sample("example4d.nii.gz")
    assert run.shape == (128, 96, 24, 2) and meta["zooms"][3] == pytest.approx(2000.0)


def test_sample_names_are_checked():
    with pytest.raises(ValueError, match="CT_small.dcm"):
        samples.dicom_sample("rtplan.dcm")
    with pytest.raises(ValueError, match="anatomical.nii"):
        samples.nifti_sample("brain.nii")


def test_missing_package_and_file_name_the_fix():
    with pytest.raises(FileNotFoundError, match="pip install no_such_package_dlmi"):
        pf.package_dir("no_such_package_dlmi")
    with pytest.raises(FileNotFoundError, match=r"nope\.csv\.gz.*pip install torchxrayvision"):
        pf.package_file("torchxrayvision", "data/nope.csv.gz")
    with pytest.raises(ValueError, match="top-level"):
        pf.package_dir("torchxrayvision.datasets")
    with pytest.raises(ValueError, match="relative"):
        pf.package_file("torchxrayvision", "")


def test_checksums_recorded_for_the_shipped_files():
    for (package, relative), digest in pf.KNOWN_SHA256.items():
        path = pf.package_file(package, relative, verify=False)
        assert pf.sha256_of(path) == digest, path
        # the wheel's own RECORD agrees, which is what lets a newer release through with a warning
        assert pf._record_sha256(package, relative) in (digest, None)


def test_changed_file_warns_if_its_wheel_vouches_for_it_else_fails(monkeypatch):
    key = ("torchxrayvision", "data/BBox_List_2017.csv.gz")
    monkeypatch.setitem(pf.KNOWN_SHA256, key, "0" * 64)  # pretend dlmi expected another version
    pf._verified.cache_clear()
    try:
        with pytest.warns(UserWarning, match="differs from the version dlmi was written for"):
            pf.package_file(*key)
        pf._verified.cache_clear()
        monkeypatch.setattr(pf, "_record_sha256", lambda package, relative: None)
        with pytest.raises(FileNotFoundError, match=r"BBox_List_2017\.csv\.gz is corrupt.*pip install torchxrayvision"):
            pf.package_file(*key)
    finally:
        pf._verified.cache_clear()


def test_reading_the_real_files_does_not_import_the_packages(monkeypatch):
    # torchxrayvision pulls in its models; scikit-image its lazy loaders and pooch (downloads).
    # An import statement for any of them now fails; locating their files must still work.
    import builtins
    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name.split(".")[0] in ("torchxrayvision", "skimage", "pooch"):
            raise AssertionError(f"dlmi.data imported {name}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)
    pf._verified.cache_clear()
    from dlmi.data import load_nih_bboxes
    assert len(load_nih_bboxes()) == 984
    assert samples.retina().shape == (1411, 1411, 3)


def test_package_exports_resolve_lazily():
    import dlmi.data
    for name in dlmi.data.__all__:
        assert getattr(dlmi.data, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute"):
        dlmi.data.not_a_loader
