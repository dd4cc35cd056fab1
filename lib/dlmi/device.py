"""Device choice and seeding, shared by every notebook.

Code in dlmi never names a device literally: tensors follow the module they are fed to, and
notebooks ask :func:`get_device` once.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

_VALID = ("cpu", "cuda", "mps")


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on: ``cuda`` > ``mps`` > ``cpu``.

    The environment variable ``DLMI_DEVICE`` (e.g. ``cpu``, ``cuda:1``) overrides the automatic
    choice, and so does ``prefer``. Asking for a device that is not available is an error rather
    than a silent fall-back, so that a GPU run that quietly ran on the CPU cannot happen.
    """
    choice = prefer if prefer is not None else os.environ.get("DLMI_DEVICE", "").strip()
    if choice:
        if not isinstance(choice, str):
            raise TypeError(f"prefer must be a device string such as 'cpu' or 'cuda:0', got {type(choice).__name__}")
        kind = choice.split(":")[0]
        if kind not in _VALID:
            raise ValueError(f"unknown device {choice!r}: expected one of 'cpu', 'cuda[:N]', 'mps'")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} requested (DLMI_DEVICE or prefer) but CUDA is not available")
        if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {choice!r} requested but Apple MPS is not available")
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0, deterministic: bool = False) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a ``torch.Generator`` seeded the same.

    ``deterministic=True`` also asks torch for deterministic kernels (slower on GPU).
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def to_device(obj, device):
    """Move tensors inside (nested) tuples, lists and dicts to ``device``; leave the rest alone."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        moved = [to_device(v, device) for v in obj]
        return type(obj)(moved) if not hasattr(obj, "_fields") else type(obj)(*moved)
    return obj
