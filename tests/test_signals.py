import numpy as np
import pytest
from scipy.signal import find_peaks

from dlmi.data.signals import ecg_like, quantize


def test_ecg_like_is_deterministic_and_shaped():
    a = ecg_like(4, 200, seed=3)
    assert a.shape == (4, 200) and a.dtype == np.float32
    assert np.array_equal(a, ecg_like(4, 200, seed=3))
    assert not np.array_equal(a, ecg_like(4, 200, seed=4))


@pytest.mark.parametrize("rate", [(60.0, 60.0), (100.0, 100.0)])
def test_r_peaks_come_at_the_requested_heart_rate(rate):
    fs, seconds = 100.0, 30
    trace = ecg_like(1, int(fs * seconds), fs=fs, heart_rate=rate, hrv=0.0, noise=0.0, seed=0)[0]
    peaks, _ = find_peaks(trace, height=0.6, distance=int(0.3 * fs))  # R waves are the only peaks above 0.6 mV
    bpm = 60.0 * fs / np.median(np.diff(peaks))
    assert bpm == pytest.approx(rate[0], rel=0.02)


def test_quantize_bins_and_centres():
    codes, centres = quantize(np.array([0.0, 0.49, 0.51, 1.0, 5.0, -3.0]), 2, low=0.0, high=1.0)
    assert codes.tolist() == [0, 0, 1, 1, 1, 0]
    assert centres.tolist() == [0.25, 0.75]


@pytest.mark.parametrize("kwargs,match", [
    ({"n": 0, "length": 10}, "n must be a positive int"),
    ({"n": 1, "length": -1}, "length must be a positive int"),
    ({"n": 1, "length": 10, "fs": 0}, "fs must be positive"),
    ({"n": 1, "length": 10, "heart_rate": (90, 60)}, "heart_rate"),
])
def test_ecg_like_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ecg_like(**kwargs)


def test_quantize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="levels must be an int >= 2"):
        quantize(np.zeros(3), 1)
    with pytest.raises(ValueError, match="high > low"):
        quantize(np.zeros(3), 4)
