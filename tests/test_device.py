import numpy as np
import pytest
import torch

import dlmi


def test_get_device_defaults_to_an_available_device(monkeypatch):
    monkeypatch.delenv("DLMI_DEVICE", raising=False)
    dev = dlmi.get_device()
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert dev.type == expected
    torch.zeros(1, device=dev)  # usable


def test_env_variable_overrides(monkeypatch):
    monkeypatch.setenv("DLMI_DEVICE", "cpu")
    assert dlmi.get_device() == torch.device("cpu")
    assert dlmi.get_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is missing")
def test_unavailable_device_is_an_error_not_a_silent_fallback(monkeypatch):
    monkeypatch.setenv("DLMI_DEVICE", "cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        dlmi.get_device()


@pytest.mark.parametrize("bad", ["gpu", "tpu:0", "cuda-1"])
def test_unknown_device_names(bad, monkeypatch):
    monkeypatch.setenv("DLMI_DEVICE", bad)
    with pytest.raises(ValueError, match="expected one of"):
        dlmi.get_device()


def test_seed_everything_reproduces_all_generators():
    def draw():
        return np.random.rand(), torch.rand(3), __import__("random").random()
    dlmi.seed_everything(7)
    a = draw()
    g = dlmi.seed_everything(7)
    b = draw()
    assert a[0] == b[0] and a[2] == b[2] and torch.equal(a[1], b[1])
    assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("seed,err", [("1", TypeError), (1.5, TypeError), (-1, ValueError), (2**32, ValueError)])
def test_seed_everything_rejects_bad_seeds(seed, err):
    with pytest.raises(err, match="seed"):
        dlmi.seed_everything(seed)


def test_to_device_moves_nested_structures():
    batch = {"images": [torch.ones(2)], "targets": ({"boxes": torch.zeros(1, 4)},), "name": "x"}
    moved = dlmi.to_device(batch, torch.device("cpu"))
    assert moved["name"] == "x" and torch.equal(moved["targets"][0]["boxes"], torch.zeros(1, 4))
    assert isinstance(moved["targets"], tuple)


def test_cuda_round_trip_when_available():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x = dlmi.to_device(torch.ones(3), dlmi.get_device())
    assert x.is_cuda


def test_import_dlmi_does_not_import_torch():
    """`import dlmi` stays cheap (the instructor's processes never need torch); the device
    helpers load it on first use."""
    import subprocess
    import sys

    code = ("import sys, dlmi; assert 'torch' not in sys.modules, 'import dlmi imported torch'; "
            "dlmi.get_device; assert 'torch' in sys.modules; print(dlmi.show_result('x', 1))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("RESULT x: 1")
