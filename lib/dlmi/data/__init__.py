"""Offline datasets: real medical material that ships inside PyPI wheels, and synthetic generators.

Nothing here touches the network. Real sources are read in place from installed packages:

- :mod:`dlmi.data.iu_reports` — 3,955 Indiana University chest X-ray reports (Demner-Fushman 2016;
  CC BY-NC-ND 4.0), from the torchxrayvision wheel: ``load_iu_reports()``, ``iu_finding_labels()``.
- :mod:`dlmi.data.nih` — NIH ChestX-ray14 study table (112,120 images, 30,805 patients) and its
  984 expert boxes (Wang 2017; NIH Clinical Center, unrestricted use with attribution):
  ``load_nih_table()``, ``load_nih_bboxes()``, ``nih_patient_sequences()``.
- :mod:`dlmi.data.samples` — retina, microaneurysm and IHC images (scikit-image), a CT and an MR
  DICOM slice (pydicom), brain MR volumes (nibabel).

Synthetic, deterministic from a seed:

- :mod:`dlmi.data.ct` — chest CT volumes with a variable number of slices and lung nodules:
  ``make_ct_volume()``, ``CTVolumeDataset``, ``collate_ct_volumes()``.
- :mod:`dlmi.data.lesions` — chest-radiograph phantoms with lesions of the 8 NIH box findings whose
  boxes copy the real NIH expert boxes (unit 10): ``LesionDataset``, ``make_lesion_image()``,
  ``collate_detection()``, ``nih_box_reference()``, ``plot_nih_box_statistics()``.
- :mod:`dlmi.data.cxr` — chest-radiograph phantoms with controlled findings (cardiomegaly, effusion,
  pneumothorax, nodule, lobar opacity) and boxes, paired with real IU report sentences (unit 06).
- :mod:`dlmi.data.signals` — ECG-like traces for the first RNN lectures.
"""
from importlib import import_module as _import_module

# Names are imported lazily from their submodules, so that `from dlmi.data.signals import ...`
# (unit 01) does not pay for pandas, scipy and the parsers.
_EXPORTS = {
    "iu_reports": ("load_iu_reports", "iu_finding_labels", "iu_label_matrix", "iu_label_counts",
                   "multi_hot", "IU_LABELS", "IU_REPORT_COUNT"),
    "nih": ("load_nih_table", "load_nih_bboxes", "nih_patient_sequences", "nih_label_matrix",
            "NIH_FINDINGS", "NIH_LABELS", "NIH_BOX_FINDINGS"),
    "ct": ("make_ct_volume", "CTVolumeDataset", "collate_ct_volumes", "hu_window"),
    "ct_detection": ("CTSliceDataset", "slice_stack", "volume_stacks", "BalancedSliceSampler"),
    "cxr": ("make_cxr_phantom", "CXRPhantom", "FindingInstance", "CXRReportDataset", "CXRSentenceBank",
            "sample_findings", "CXR_FINDINGS"),
    "lesions": ("LesionDataset", "make_lesion_image", "collate_detection", "nih_box_reference",
                "plot_nih_box_statistics", "LESION_CLASSES"),
    "samples": ("retina", "microaneurysms", "immunohistochemistry", "dicom_sample", "ct_slice",
                "nifti_sample"),
    "signals": ("ecg_like", "quantize"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = [name for names in _EXPORTS.values() for name in names]


def __getattr__(name):
    if name in _WHERE:
        value = getattr(_import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
