"""Real medical sample images and volumes that ship offline inside PyPI packages.

Each loader reads a file in place from the installed package's directory (found without importing
the package, see ``_package_files``) so nothing can trigger a download: scikit-image fetches most
of its samples from the network on first use, and pydicom's ``get_testdata_file`` falls back to a
download for files it does not bundle. Only bundled files are offered here.

Sources and licences:

- ``retina()``: fundus photograph of a normal left eye (Häggström 2014, WikiJournal of Medicine,
  doi:10.15347/wjm/2014.008), via Wikimedia Commons, CC0 1.0; shipped by scikit-image.
- ``microaneurysms()``: crop (green channel) of image 07_dr of the High-Resolution Fundus (HRF)
  database (Budai et al. 2013, Int J Biomed Imaging, doi:10.1155/2013/154860), CC0 by its owner
  (A. Maier); shipped by scikit-image.
- ``immunohistochemistry()``: colonic glands, FHL2 protein revealed with DAB, hematoxylin
  counterstain (Center for Microscopy And Molecular Imaging); "no known copyright restrictions"
  per scikit-image.
- ``dicom_sample()``: pydicom's test files (MIT-licensed package); ``CT_small.dcm`` is a CT slice
  downsized to 128x128 from the NEMA WG04 sample set ("CT1_UNC"), ``MR_small.dcm`` an MR slice
  downsized to 64x64 from "MR1_UNC".
- ``nifti_sample()``: nibabel's test data (covered by nibabel's MIT licence): ``anatomical.nii``
  a small structural brain MR (33x41x25, 2 mm), ``example4d.nii.gz`` a 4-D functional MR run
  (128x96x24, 2 volumes).
"""
from __future__ import annotations

import numpy as np

from ._package_files import package_file

DICOM_SAMPLES = ("CT_small.dcm", "MR_small.dcm")
NIFTI_SAMPLES = ("anatomical.nii", "example4d.nii.gz", "functional.nii")


def _read_image(relative: str) -> np.ndarray:
    # Pillow comes with matplotlib; importing skimage.io would pull in imageio and lazy loaders.
    from PIL import Image
    path = package_file("skimage", relative)
    with Image.open(path) as image:
        return np.asarray(image)


def retina() -> np.ndarray:
    """Colour fundus photograph of a normal retina: uint8 array (1411, 1411, 3), RGB. CC0."""
    return _read_image("data/retina.jpg")


def microaneurysms() -> np.ndarray:
    """Retina detail with microaneurysms (green channel): uint8 array (102, 102). CC0."""
    image = _read_image("data/microaneurysms.png")
    return image if image.ndim == 2 else image[..., 0]


def immunohistochemistry() -> np.ndarray:
    """IHC-stained colonic glands (DAB + hematoxylin): uint8 array (512, 512, 3), RGB."""
    image = _read_image("data/ihc.png")
    return image[..., :3]


def dicom_sample(name: str = "CT_small.dcm"):
    """A bundled pydicom test slice: ``(pixels, meta)``.

    pixels: float32 (rows, columns) after the modality LUT (RescaleSlope / RescaleIntercept), i.e.
    Hounsfield units for CT. meta: dict with modality, rows, columns, pixel_spacing (mm, row and
    column), slice_thickness (mm or None), rescale_slope, rescale_intercept, path. Patient fields
    are not copied into meta.
    """
    if name not in DICOM_SAMPLES:
        raise ValueError(f"name must be one of {DICOM_SAMPLES} (files bundled with pydicom), got {name!r}")
    import pydicom
    path = package_file("pydicom", f"data/test_files/{name}")
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array.astype(np.float32)
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    spacing = tuple(float(v) for v in ds.PixelSpacing) if "PixelSpacing" in ds else None
    thickness = float(ds.SliceThickness) if "SliceThickness" in ds and ds.SliceThickness != "" else None
    meta = {"modality": str(ds.Modality), "rows": int(ds.Rows), "columns": int(ds.Columns),
            "pixel_spacing": spacing, "slice_thickness": thickness,
            "rescale_slope": slope, "rescale_intercept": intercept, "path": str(path)}
    return raw * np.float32(slope) + np.float32(intercept), meta


def ct_slice():
    """The CT slice of pydicom's ``CT_small.dcm`` in HU (float32 (128, 128)) and its meta dict."""
    return dicom_sample("CT_small.dcm")


def nifti_sample(name: str = "anatomical.nii"):
    """A bundled nibabel test volume: ``(data, meta)``.

    data: float32 array as stored (3-D, or 4-D for functional runs), scaled by the header's slope.
    meta: dict with shape, zooms (voxel size in mm, and TR for 4-D), affine (4x4 float64 voxel ->
    world mm), path.
    """
    if name not in NIFTI_SAMPLES:
        raise ValueError(f"name must be one of {NIFTI_SAMPLES} (files bundled with nibabel), got {name!r}")
    import nibabel
    path = package_file("nibabel", f"tests/data/{name}")
    image = nibabel.load(path)
    data = np.asarray(image.get_fdata(dtype=np.float32))
    meta = {"shape": tuple(int(s) for s in image.shape),
            "zooms": tuple(float(z) for z in image.header.get_zooms()),
            "affine": np.asarray(image.affine, dtype=np.float64), "path": str(path)}
    return data, meta
