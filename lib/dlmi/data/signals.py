"""Synthetic physiological signals for the first RNN lectures.

``ecg_like`` draws electrocardiogram-like traces as a sum of Gaussian waves per beat (P, Q, R, S,
T), the construction of McSharry et al. 2003 ("A dynamical model for generating synthetic
electrocardiogram signals") reduced to its morphology: each beat's waves have fixed relative
timing and the RR interval varies from beat to beat (heart-rate variability), plus baseline
wander and measurement noise. Deterministic from a seed.
"""
from __future__ import annotations

import numpy as np

# (relative time in the RR interval, amplitude in mV, width in s) for P, Q, R, S, T.
_WAVES = np.array([
    [-0.20, 0.12, 0.025],
    [-0.03, -0.10, 0.010],
    [0.00, 1.00, 0.012],
    [0.03, -0.20, 0.010],
    [0.28, 0.30, 0.040],
])


def ecg_like(n: int, length: int, fs: float = 50.0, heart_rate=(55.0, 110.0), hrv: float = 0.05,
             noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """n ECG-like traces of ``length`` samples at ``fs`` Hz, float32 array of shape (n, length).

    heart_rate: range (beats per minute) a trace's mean rate is drawn from; hrv: relative
    beat-to-beat jitter of the RR interval; noise: standard deviation of white noise (mV).
    """
    for name, v in (("n", n), ("length", length)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if fs <= 0:
        raise ValueError(f"fs must be positive (Hz), got {fs}")
    lo, hi = heart_rate
    if not 0 < lo <= hi:
        raise ValueError(f"heart_rate must be a range (low, high) of positive beats/min, got {heart_rate}")
    rng = np.random.default_rng(seed)
    t = np.arange(length) / fs
    out = np.empty((n, length), dtype=np.float32)
    duration = length / fs
    for i in range(n):
        rr_mean = 60.0 / rng.uniform(lo, hi)
        # Beat times: a random phase, then RR intervals with jitter; enough beats to cover the trace.
        n_beats = int(duration / (rr_mean * (1 - 3 * hrv))) + 3
        rr = rr_mean * (1 + hrv * rng.standard_normal(n_beats))
        beats = -rng.uniform(0, rr_mean) + np.cumsum(rr)
        # Waves scale with the RR interval, as the QT interval does with heart rate.
        centres = beats[:, None] + _WAVES[None, :, 0] * np.sqrt(rr[:, None])
        widths = _WAVES[None, :, 2] * np.ones_like(centres)
        amps = _WAVES[None, :, 1] * (1 + 0.05 * rng.standard_normal((n_beats, 1)))
        d = t[:, None, None] - centres[None]
        trace = (amps[None] * np.exp(-0.5 * (d / widths[None]) ** 2)).sum(axis=(1, 2))
        wander = 0.05 * np.sin(2 * np.pi * rng.uniform(0.15, 0.3) * t + rng.uniform(0, 2 * np.pi))
        out[i] = trace + wander + noise * rng.standard_normal(length)
    return out


def quantize(signal: np.ndarray, levels: int, low: float | None = None, high: float | None = None):
    """Map a real signal to integer levels 0..levels-1 (uniform bins between low and high).

    Returns (codes as int64 array of the same shape, bin centres (levels,)). Used to turn a trace
    into a sequence of symbols so that an RNN can give it a probability, P(y_1..y_T).
    """
    if not isinstance(levels, (int, np.integer)) or levels < 2:
        raise ValueError(f"levels must be an int >= 2, got {levels!r}")
    signal = np.asarray(signal, dtype=np.float64)
    low = float(np.quantile(signal, 0.001)) if low is None else float(low)
    high = float(np.quantile(signal, 0.999)) if high is None else float(high)
    if not high > low:
        raise ValueError(f"need high > low to quantize, got low={low}, high={high}")
    edges = np.linspace(low, high, levels + 1)
    codes = np.clip(np.digitize(signal, edges[1:-1]), 0, levels - 1).astype(np.int64)
    centres = (edges[:-1] + edges[1:]) / 2
    return codes, centres
