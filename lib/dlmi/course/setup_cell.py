"""The first code cell of every notebook: install dlmi where it is missing, touch nothing else.

On Colab torch, torchvision, numpy and TensorFlow come preinstalled; reinstalling them breaks the
runtime. The cell therefore pins whatever versions are already there as pip *constraints* and asks
only for dlmi. On Binder and on a set-up laptop dlmi is already importable and the cell does nothing.
Generated from one setting (the repository URL in pyproject.toml) so that it is never typed by hand.
"""
from __future__ import annotations

MARKER = "# dlmi setup"

TEMPLATE = '''{marker}: installs dlmi only where it is missing (Colab, a bare laptop); never reinstalls
# torch, torchvision, numpy or tensorflow (their installed versions are passed to pip as constraints).
import importlib.metadata, importlib.util, subprocess, sys, tempfile
if importlib.util.find_spec("dlmi") is None:
    keep = []
    for dist in ("torch", "torchvision", "numpy", "tensorflow", "tensorflow-cpu", "keras"):
        try:
            keep.append(f"{{dist}}=={{importlib.metadata.version(dist)}}")
        except importlib.metadata.PackageNotFoundError:
            pass
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write("\\n".join(keep))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", pins.name,
                    "dlmi[course] @ git+{url}"], check=True)'''


def setup_cell_source(repository_url: str) -> str:
    if not repository_url.startswith("https://"):
        raise ValueError(f"repository_url must be an https URL, got {repository_url!r}")
    return TEMPLATE.format(marker=MARKER, url=repository_url.rstrip("/"))


def first_code_cell(nb):
    return next((c for c in nb.cells if c.cell_type == "code"), None)
