"""Find data files that other installed packages ship, without importing those packages.

The real material in this course (the Indiana University reports, the NIH ChestX-ray14 tables,
sample images and volumes) ships inside PyPI wheels. Importing ``torchxrayvision`` to find its
``data/`` folder would pull in its models and their dependencies, seconds of start-up for a path.
``importlib.util.find_spec`` on a *top-level* package only locates it: the package's
``__init__`` is not executed, so we get the directory for free.

The three torchxrayvision files we parse (and scikit-image's sample images) are checked against
SHA-256 sums recorded here, so that a truncated download or an edited file fails with a message
naming the file instead of a parser error deep inside pandas or tarfile. A file that differs from our sums but still matches the hash
its own wheel recorded (a newer torchxrayvision that updated it) is accepted with a warning.
"""
from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import warnings
from functools import lru_cache
from pathlib import Path

# SHA-256 of the files we parse, as shipped in torchxrayvision 1.5.x (also in its wheel's RECORD).
KNOWN_SHA256 = {
    ("torchxrayvision", "data/NLMCXR_reports.tgz"):
        "8fb6de7eec73d8c3665067ad4bb003ccd57f971ae316d2642e1627ac7268667a",
    ("torchxrayvision", "data/Data_Entry_2017_v2020.csv.gz"):
        "9d4de640ee4f760215d8be98376b20387ca52f9c6b4d1b727cb588fb82f40b80",
    ("torchxrayvision", "data/BBox_List_2017.csv.gz"):
        "cf9dc6029f65daa8b389415b0546af0eeeb91fbac7d63ec49d7f8de2fd8f40cd",
    # scikit-image's own registry sums (skimage/data/_registry.py) for its bundled medical images.
    ("skimage", "data/retina.jpg"): "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    ("skimage", "data/microaneurysms.png"): "a1e1be59aa447f8ce082f7fa809997ab369a2b137cb6c4202abc647c7ccf6456",
    ("skimage", "data/ihc.png"): "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
}

# The pip distribution that provides each import name (they differ for scikit-image).
_DISTRIBUTION = {"torchxrayvision": "torchxrayvision", "skimage": "scikit-image",
                 "pydicom": "pydicom", "nibabel": "nibabel"}


def _install_hint(package: str) -> str:
    return f"pip install {_DISTRIBUTION.get(package, package)}"


def package_dir(package: str) -> Path:
    """Directory of an installed top-level package, found without executing its ``__init__``.

    Raises FileNotFoundError with the pip command to run if the package is not installed.
    """
    if not isinstance(package, str) or not package or "." in package:
        raise ValueError(f"package must be a top-level package name such as 'torchxrayvision', got {package!r}")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the package {package!r} is not installed; its data files are needed here. "
            f"Install it with `{_install_hint(package)}` (or `pip install dlmi[course]`).")
    return Path(list(spec.submodule_search_locations)[0])


def sha256_of(path: os.PathLike | str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_sha256(package: str, relative: str) -> str | None:
    """The hash the installed wheel recorded for a file (its RECORD), hex; None if unknown."""
    try:
        files = importlib.metadata.files(_DISTRIBUTION.get(package, package)) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    wanted = f"{package}/{relative}"
    for f in files:
        if str(f).replace("\\", "/") == wanted and f.hash is not None and f.hash.mode == "sha256":
            # RECORD stores urlsafe base64 without padding.
            raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
            return raw.hex()
    return None


@lru_cache(maxsize=None)
def _verified(path_str: str, size: int, mtime_ns: int, package: str, relative: str) -> bool:
    # Cached on (path, size, mtime) so a file is hashed once per process, and again if it changes.
    actual = sha256_of(path_str)
    expected = KNOWN_SHA256.get((package, relative))
    if expected is None or actual == expected:
        return True
    recorded = _record_sha256(package, relative)
    if recorded is not None and actual == recorded:
        warnings.warn(
            f"{path_str} differs from the version dlmi was written for but matches its own "
            f"package's record (a newer release?); counts and columns may differ.", stacklevel=4)
        return True
    raise FileNotFoundError(
        f"{path_str} is corrupt or truncated (SHA-256 {actual[:12]}..., expected {expected[:12]}...). "
        f"Reinstall the package that ships it: `pip install {_DISTRIBUTION.get(package, package)} "
        f"--force-reinstall --no-deps`.")


def package_file(package: str, relative: str, verify: bool = True) -> Path:
    """Path of a data file inside an installed package, checked to exist (and its checksum).

    ``relative`` is the path inside the package, e.g. ``"data/NLMCXR_reports.tgz"``. With
    ``verify`` the file's SHA-256 is compared with :data:`KNOWN_SHA256` (files not listed there
    are only checked to exist). Raises FileNotFoundError naming the file and the pip command.
    """
    if not isinstance(relative, str) or not relative:
        raise ValueError(f"relative must be a path inside the package such as 'data/x.csv.gz', got {relative!r}")
    path = package_dir(package) / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the installed {package!r} does not ship {relative!r}. "
            f"Reinstall it with `{_install_hint(package)}` (a version that includes the file).")
    if verify:
        verify_file(path, package, relative)
    return path


def verify_file(path: os.PathLike | str, package: str, relative: str) -> Path:
    """Check a file against the SHA-256 recorded for ``(package, relative)``; return its Path.

    Used both for the installed file and for a copy a caller points a loader at. Raises
    FileNotFoundError naming the file if it is missing, corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (expected the file {relative!r} of "
                                f"{package!r}; `{_install_hint(package)}` provides it).")
    stat = path.stat()
    _verified(str(path), stat.st_size, stat.st_mtime_ns, package, relative)
    return path
