"""Synthetic chest CT volumes with lung nodules, for slice-sequence models (unit 05) and 3-D detection.

No chest CT with nodule annotations can ship offline, so we draw a phantom with the same
difficulty: each axial slice shows a body outline (fat, muscle), ribs, spine, heart, aorta,
trachea and two lungs whose size follows the chest from apex to diaphragm, crossed by vessels
that branch out from the hila. Nodules are solid ellipsoids placed in the lungs. On a single
slice a nodule and a vessel running through the slice are both small round soft-tissue blobs of
the same density and size: what tells them apart is the third dimension (a vessel continues and
moves from slice to slice, a nodule appears and vanishes within a few slices). That is why the
lecture reads slices as a sequence rather than classifying one slice.

Intensities are Hounsfield-unit-like (air -1000, lung about -850, fat -100, soft tissue and blood
+30..+60, bone +250..+700); the scan is then blurred (partial volume: a voxel averages what lies
inside it) and made noisy (quantum noise, correlated by the reconstruction kernel). The number
of slices varies from volume to volume as in real scans reconstructed at different slice
thicknesses: the chest is always ~300 mm long, so fewer slices means thicker ones, and nodules
cover fewer slices. Everything is deterministic from the seed.

Coordinates follow torchvision: voxel index i covers [i, i+1), so a voxel's centre is i + 0.5;
boxes are xyxy in pixels of the slice. Nodule centres and radii are in voxels, (z, y, x) order.
Synthetic: no licence restrictions.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

CHEST_LENGTH_MM = 300.0  # apex of the lungs to the diaphragm, what every volume covers
FIELD_OF_VIEW_MM = 360.0  # in-plane width of the slice

AIR_HU, LUNG_HU, FAT_HU, MUSCLE_HU, SOFT_HU, BLOOD_HU = -1000.0, -850.0, -100.0, 50.0, 30.0, 40.0
CORTEX_HU, MARROW_HU, DISC_HU = 700.0, 250.0, 90.0


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _check_range(name, value, low, integer=False):
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}") from None
    if integer:
        a, b = _check_int(f"{name}[0]", a, low), _check_int(f"{name}[1]", b, low)
    elif not (np.isfinite(a) and np.isfinite(b)) or a < low:
        raise ValueError(f"{name} must be finite with low >= {low}, got {value!r}")
    if a > b:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return a, b


def _ellipse(x, y, cx, cy, ax, ay):
    """Normalised radius of the ellipse: < 1 inside. ax, ay may vary per slice (broadcast)."""
    return np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)


def _blur_noise_factor(sigmas) -> float:
    """How much a separable Gaussian blur (truncate=3) shrinks the std of white noise."""
    factor = 1.0
    for sigma in sigmas:
        if sigma > 0:
            taps = np.arange(-int(3.0 * sigma + 0.5), int(3.0 * sigma + 0.5) + 1)
            w = np.exp(-0.5 * (taps / sigma) ** 2)
            factor *= np.sqrt(np.sum((w / w.sum()) ** 2))
    return float(factor)


def _voxel_centres_inside(centre, radii) -> int:
    """How many voxel centres (i + 0.5) lie inside an axis-aligned ellipsoid."""
    axes = [np.arange(np.floor(c - r), np.ceil(c + r) + 1) + 0.5 for c, r in zip(centre, radii)]
    terms = [((a - c) / r) ** 2 for a, c, r in zip(axes, centre, radii)]
    return int(((terms[0][:, None, None] + terms[1][None, :, None] + terms[2][None, None, :]) < 1).sum())


def _vessel_segments(rng, n_vessels: int, t_hilum: float, steps: int = 3):
    """Vessels as polylines from the hila outwards, in normalised units.

    x, y in [-1, 1] (slice plane), t in [0, 1] (apex to base). Each vessel is a random walk of
    ``steps`` segments away from its hilum, tapering, so that it crosses many slices at varying
    angles. Returns starts and ends (n_vessels * steps, 3) as (x, y, t), and the radius at each
    end (n_vessels * steps,) twice, all drawn at once.
    """
    side = np.where(np.arange(n_vessels) % 2 == 0, -1.0, 1.0)
    point = np.stack([side * rng.uniform(0.12, 0.2, n_vessels), rng.uniform(-0.12, 0.08, n_vessels),
                      t_hilum + rng.uniform(-0.06, 0.06, n_vessels)], axis=1)
    # Head outwards and up or down the chest; large t steps so that vessels cross slices.
    direction = np.stack([side * rng.uniform(0.3, 1.0, n_vessels), rng.uniform(-0.6, 0.6, n_vessels),
                          rng.choice([-1.0, 1.0], n_vessels) * rng.uniform(0.4, 1.4, n_vessels)], axis=1)
    radius = rng.uniform(0.04, 0.065, n_vessels)
    wobble = rng.normal(0, 0.35, (steps, n_vessels, 3))
    lengths = rng.uniform(0.12, 0.22, (steps, n_vessels, 1))
    tapers = rng.uniform(0.6, 0.85, (steps, n_vessels))
    starts, ends, r_start, r_end = [], [], [], []
    for k in range(steps):
        direction = direction + wobble[k]
        step = direction / np.linalg.norm(direction, axis=1, keepdims=True) * lengths[k]
        step[:, 2] *= 1.6  # t spans [0, 1] over 300 mm, x and y span [-1, 1] over 360 mm
        end = point + step
        end[:, 2] = np.clip(end[:, 2], 0.02, 0.98)
        starts.append(point)
        ends.append(end)
        r_start.append(radius)
        radius = radius * tapers[k]
        r_end.append(radius)
        point = end
    return np.concatenate(starts), np.concatenate(ends), np.concatenate(r_start), np.concatenate(r_end)


def make_ct_volume(seed: int, n_slices: int | None = None, size: int = 64, n_nodules: int | None = None,
                   slice_range=(16, 48), nodule_prob: float = 0.5, max_nodules: int = 3,
                   nodule_radius=(1.5, 3.0), n_vessels: int | None = None, noise_hu: float = 20.0,
                   blur: float = 0.6):
    """One synthetic chest CT volume and its ground truth, deterministic from ``seed``.

    Arguments: ``n_slices`` (default: drawn from ``slice_range``), ``size`` (pixels of the square
    slice, >= 32), ``n_nodules`` (default: 0 with probability 1 - nodule_prob, else 1..max_nodules),
    ``nodule_radius`` (in-plane radius range in pixels at size 64, scaled with size; at least 1
    pixel, and at least half a slice along z so that thick slices still show every nodule),
    ``n_vessels`` (default 10-16), ``noise_hu`` (noise standard deviation), ``blur`` (Gaussian
    sigma in pixels of the partial-volume blur; 0 turns it off).

    Returns ``(volume, truth)``: volume is a float32 tensor (n_slices, size, size) in HU; truth:
      label (int, 1 if the volume has a nodule), n_slices, spacing ((dz, dy, dx) in mm),
      centers (float32 (K, 3), voxels, z y x), radii (float32 (K, 3), voxels, z y x),
      boxes3d (float32 (K, 6), x1 y1 z1 x2 y2 z2, voxels),
      slice_boxes (list of n_slices float32 tensors (n, 4), xyxy pixels of each nodule cut),
      slice_nodules (list of n_slices int64 tensors (n,), which nodule each box belongs to),
      slice_labels (int64 (n_slices,), 1 where a nodule is cut),
      nodule_mask, vessel_mask, lung_mask (bool (n_slices, size, size)).
    """
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    size = _check_int("size", size, 32, 1024)
    lo, hi = _check_range("slice_range", slice_range, 4, integer=True)
    max_nodules = _check_int("max_nodules", max_nodules, 1, 20)
    r_lo, r_hi = _check_range("nodule_radius", nodule_radius, 0.5)
    if not 0.0 <= float(nodule_prob) <= 1.0:
        raise ValueError(f"nodule_prob must be a probability in [0, 1], got {nodule_prob}")
    if not (np.isfinite(noise_hu) and noise_hu >= 0):
        raise ValueError(f"noise_hu must be >= 0 (HU), got {noise_hu}")
    if not (np.isfinite(blur) and blur >= 0):
        raise ValueError(f"blur must be >= 0 (pixels), got {blur}")
    rng = np.random.default_rng(seed)
    depth = _check_int("n_slices", n_slices, 4, 1024) if n_slices is not None else int(rng.integers(lo, hi + 1))
    requested = n_nodules is not None
    if not requested:
        n_nodules = int(rng.integers(1, max_nodules + 1)) if rng.random() < nodule_prob else 0
    n_nodules = _check_int("n_nodules", n_nodules, 0, 20)
    n_vessels = int(rng.integers(10, 17)) if n_vessels is None else _check_int("n_vessels", n_vessels, 0, 100)

    dz, dxy = CHEST_LENGTH_MM / depth, FIELD_OF_VIEW_MM / size
    scale = size / 64.0
    # Broadcastable coordinates: t (D,1,1) apex->base, y (1,H,1) anterior->posterior, x (1,1,W).
    t = ((np.arange(depth, dtype=np.float32) + 0.5) / depth)[:, None, None]
    y = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1)[None, :, None]
    x = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1)[None, None, :]
    shape = (depth, size, size)

    # --- Anatomy (per-volume variation: body size, fat, lung size, heart, spine phase) ---
    body_scale = rng.uniform(0.86, 1.0)
    fat = rng.uniform(0.04, 0.12)
    taper = 0.85 + 0.15 * np.clip(t / 0.3, 0, 1)  # the chest is narrower from side to side at the apex
    body_r = _ellipse(x, y, 0.0, 0.05, 0.9 * body_scale * taper, 0.62 * body_scale)
    body = body_r < 1
    vol = np.full(shape, AIR_HU, dtype=np.float32)
    vol[body] = SOFT_HU
    vol[body & (body_r > 1 - fat)] = FAT_HU
    vol[body & (body_r <= 1 - fat) & (body_r > 1 - fat - 0.08)] = MUSCLE_HU
    # Ribs: arcs in a band inside the muscle wall, at angles that rotate from slice to slice.
    theta = np.arctan2(y - 0.05, x)
    rib_band = (body_r <= 1 - fat - 0.08) & (body_r > 1 - fat - 0.14)
    rib_phase = rng.uniform(0, 2 * np.pi)
    ribs = rib_band & (np.sin(7 * theta + 2 * np.pi * 4 * t + rib_phase) > 0.55)
    vol[ribs] = CORTEX_HU * 0.8

    # Organs are placed in the body's frame: centre (0, 0.05), scaled with the body.
    def organ(cx, cy, ax, ay):
        return _ellipse(x, y, body_scale * cx, 0.05 + body_scale * cy, body_scale * ax, body_scale * ay)

    lung_scale = rng.uniform(0.92, 1.05)
    # Lung cross-section grows from the apex and shrinks over the diaphragm's dome.
    profile = np.sqrt(np.clip(t / 0.22, 0.02, 1)) * np.sqrt(np.clip((1.04 - t) / 0.28, 0.0, 1))
    lungs = np.zeros(shape, dtype=bool)
    for side, width in ((-1.0, rng.uniform(0.29, 0.33)), (1.0, rng.uniform(0.27, 0.31))):
        lungs |= organ(side * 0.4, -0.05, width * lung_scale * profile + 1e-3, 0.42 * lung_scale * profile + 1e-3) < 1
    lungs &= np.abs(x) > 0.09 * body_scale  # the mediastinum separates the lungs
    heart_size = rng.uniform(0.24, 0.32) * np.sqrt(np.clip((t - 0.42) / 0.3, 0, 1))
    heart = organ(0.1, -0.22, heart_size + 1e-3, 0.85 * heart_size + 1e-3) < 1
    aorta = ((organ(0.14, 0.2, 0.075, 0.075) < 1)  # descending aorta, all the way down
             | ((organ(0.04, -0.27, 0.085, 0.085) < 1) & (t > 0.15) & (t < 0.45)))  # ascending
    trachea = (organ(0.0, -0.12, 0.065, 0.06) < 1) & (t < 0.42)
    # The spine is the same shape on every slice; masks are broadcast to the volume's shape.
    spine_body = np.broadcast_to(organ(0.0, 0.36, 0.12, 0.1), shape)
    canal = np.broadcast_to(organ(0.0, 0.5, 0.05, 0.045) < 1, shape)
    posterior = np.broadcast_to((np.abs(x) < 0.05 * body_scale) & (y > 0.05 + 0.55 * body_scale)
                                & (y < 0.05 + 0.6 * body_scale), shape)
    # Vertebrae ~25 mm high separated by discs: a period of 1/12 of the chest length.
    disc = np.broadcast_to(((t * 12 + rng.uniform(0, 1)) % 1.0) < 0.2, shape)
    lungs &= ~heart & ~aorta & (spine_body > 1.15) & ~trachea
    # Dependent (posterior) lung is denser: gravity, a gradient any real CT shows.
    vol = np.where(lungs, LUNG_HU + rng.uniform(-30, 30) + 50 * (y + 1) / 2, vol)
    vol[heart] = BLOOD_HU
    vol[aorta] = BLOOD_HU
    vol[trachea] = AIR_HU
    vol[spine_body < 1] = np.where(disc, DISC_HU, MARROW_HU)[spine_body < 1]
    vol[(spine_body < 1) & (spine_body > 0.8) & ~disc] = CORTEX_HU
    vol[posterior & ~disc] = CORTEX_HU * 0.7
    vol[canal] = 10.0

    # --- Vessels: capsules (segments with a radius), drawn in their bounding box only ---
    # Work in in-plane pixel units; a slice's centre sits at z_mm / dxy.
    zc = (np.arange(depth, dtype=np.float32) + 0.5) * (dz / dxy)
    yc = np.arange(size, dtype=np.float32) + 0.5
    xc = np.arange(size, dtype=np.float32) + 0.5
    vessel_alpha = np.zeros(shape, dtype=np.float32)
    p0, p1, r0, r1 = _vessel_segments(rng, n_vessels, t_hilum=rng.uniform(0.42, 0.55))

    def to_pixels(p):  # normalised (x, y, t) -> (z, y, x) in in-plane pixel units
        return np.stack([p[:, 2] * CHEST_LENGTH_MM / dxy, (p[:, 1] + 1) / 2 * size, (p[:, 0] + 1) / 2 * size], axis=1)

    starts, ends = to_pixels(p0), to_pixels(p1)
    r0, r1 = r0 * size / 2, r1 * size / 2
    pad = np.maximum(r0, r1)[:, None] + 1.5
    lo_zyx, hi_zyx = np.minimum(starts, ends) - pad, np.maximum(starts, ends) + pad
    # Bounding boxes in voxel indices (z back to slices), clipped to the volume.
    k0s = np.clip(np.floor(lo_zyx[:, 0] * dxy / dz), 0, depth).astype(int)
    k1s = np.clip(np.ceil(hi_zyx[:, 0] * dxy / dz) + 1, 0, depth).astype(int)
    i0s, i1s = np.clip(lo_zyx[:, 1], 0, size).astype(int), np.clip(hi_zyx[:, 1] + 1, 0, size).astype(int)
    j0s, j1s = np.clip(lo_zyx[:, 2], 0, size).astype(int), np.clip(hi_zyx[:, 2] + 1, 0, size).astype(int)
    # float32 throughout: a float64 scalar would silently promote every array below.
    starts, steps = starts.astype(np.float32), (ends - starts).astype(np.float32)
    r0, r1 = r0.astype(np.float32), r1.astype(np.float32)
    for a, d, ra, rb, k0, k1, i0, i1, j0, j1 in zip(starts, steps, r0, r1, k0s, k1s, i0s, i1s, j0s, j1s):
        if k0 >= k1 or i0 >= i1 or j0 >= j1:
            continue
        qz, qy, qx = zc[k0:k1, None, None] - a[0], yc[None, i0:i1, None] - a[1], xc[None, None, j0:j1] - a[2]
        # Projection of each voxel on the segment, clamped to its ends; radius tapers along it.
        s = np.clip((qz * d[0] + qy * d[1] + qx * d[2]) / (d @ d + np.float32(1e-9)), 0, 1)
        dist = np.sqrt((qz - s * d[0]) ** 2 + (qy - s * d[1]) ** 2 + (qx - s * d[2]) ** 2)
        alpha = np.clip(ra + (rb - ra) * s - dist + 0.5, 0, 1)  # soft edge one pixel wide
        view = vessel_alpha[k0:k1, i0:i1, j0:j1]
        np.maximum(view, alpha, out=view)
    vessel_alpha *= lungs  # vessels are visible against air-filled lung; in the hila they merge
    vessel_hu = BLOOD_HU + rng.uniform(-10, 10)
    vol += vessel_alpha * (vessel_hu - vol)

    # --- Nodules: ellipsoids centred in the lungs, not overlapping each other ---
    centers, radii, hus = [], [], []
    lung_voxels = np.flatnonzero(lungs)
    for _ in range(n_nodules):
        for _attempt in range(100):
            r_xy = max(rng.uniform(r_lo, r_hi) * scale, 1.0)
            # A nodule thinner than a thick slice still shows on it (partial volume): >= half a slice.
            r = np.array([max(r_xy * rng.uniform(0.8, 1.25) * dxy / dz, 0.5), r_xy * rng.uniform(0.8, 1.25), r_xy])
            flat = lung_voxels[rng.integers(len(lung_voxels))] if len(lung_voxels) else 0
            c = np.array(np.unravel_index(flat, shape), dtype=np.float64) + rng.uniform(0.0, 1.0, 3)
            # Inside the lung with a margin, so that it is seen against lung rather than merged into
            # the chest wall: the centre and six points beyond its poles must all be lung voxels.
            reach = np.diag(r * 1.2 + np.array([0.5, 1.0, 1.0]))
            probes = np.concatenate([c[None], c + reach, c - reach])
            idx = np.floor(probes).astype(int)
            if (idx < 0).any() or (idx >= np.array(shape)).any() or not lungs[tuple(idx.T)].all():
                continue
            if any(np.all(np.abs(c - c2) < r + r2 + 1.0) for c2, r2 in zip(centers, radii)):
                continue
            if _voxel_centres_inside(c, r) < 3:  # thin slices: it must show on at least one
                continue
            centers.append(c)
            radii.append(r)
            hus.append(BLOOD_HU + rng.uniform(-15, 25))
            break
        else:
            # A *drawn* count may exceed what small lungs hold: keep those placed, possibly none
            # (the volume is then labelled 0, truthfully). A *requested* count is a contract: raise.
            if requested:
                raise RuntimeError(f"could not place {n_nodules} nodules in the lungs of volume seed={seed} "
                                   f"(size={size}, n_slices={depth}); use fewer or smaller nodules")
            n_nodules = len(centers)
            break
    nodule_alpha = np.zeros(shape, dtype=np.float32)
    zz = np.arange(depth, dtype=np.float32)[:, None, None] + 0.5
    cut_slices = []  # per nodule, the slices on which some voxel centre lies inside it
    for c, r, hu in zip(centers, radii, hus):
        k0, k1 = max(int(c[0] - r[0] - 1), 0), min(int(c[0] + r[0] + 2), depth)
        i0, i1 = max(int(c[1] - r[1] - 2), 0), min(int(c[1] + r[1] + 3), size)
        j0, j1 = max(int(c[2] - r[2] - 2), 0), min(int(c[2] + r[2] + 3), size)
        rho = np.sqrt(((zz[k0:k1] - c[0]) / r[0]) ** 2 + ((yc[None, i0:i1, None] - c[1]) / r[1]) ** 2
                      + ((xc[None, None, j0:j1] - c[2]) / r[2]) ** 2)
        alpha = np.clip((1 - rho) * r[2] + 0.5, 0, 1)
        region = vol[k0:k1, i0:i1, j0:j1]
        region += alpha * (hu - region)
        np.maximum(nodule_alpha[k0:k1, i0:i1, j0:j1], alpha, out=nodule_alpha[k0:k1, i0:i1, j0:j1])
        cut_slices.append(set((k0 + np.flatnonzero((alpha > 0.5).any(axis=(1, 2)))).tolist()))

    # --- Acquisition: noise, then the blur of partial volume and the reconstruction kernel ---
    # Noise goes in before the blur, as in a real scan, so it comes out spatially correlated; it is
    # drawn stronger by the factor the blur removes, so that its final std is about noise_hu.
    sigmas = (0.5 * blur, blur, blur)
    if noise_hu > 0:
        vol += rng.standard_normal(shape, dtype=np.float32) * np.float32(noise_hu / _blur_noise_factor(sigmas))
    if blur > 0:
        vol = gaussian_filter(vol, sigma=sigmas, mode="nearest", truncate=3.0)
    np.clip(vol, -1024.0, 3071.0, out=vol)

    # --- Ground truth: per slice, the box of each nodule's cross-section by the slice's plane ---
    # A nodule is on slice k when a voxel centre of the slice lies inside it (its mask, below); the
    # box is the analytic cut of the ellipsoid at the slice centre, at least one pixel wide.
    slice_boxes, slice_nodules = [], []
    for k in range(depth):
        boxes, ids = [], []
        for n, (c, r) in enumerate(zip(centers, radii)):
            if k not in cut_slices[n]:
                continue
            chord = np.sqrt(max(1.0 - ((k + 0.5 - c[0]) / r[0]) ** 2, 0.0))
            hy, hx = max(r[1] * chord, 0.5), max(r[2] * chord, 0.5)
            boxes.append([max(c[2] - hx, 0.0), max(c[1] - hy, 0.0), min(c[2] + hx, size), min(c[1] + hy, size)])
            ids.append(n)
        slice_boxes.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        slice_nodules.append(torch.tensor(ids, dtype=torch.int64))
    centers_t = torch.tensor(np.array(centers).reshape(-1, 3), dtype=torch.float32)
    radii_t = torch.tensor(np.array(radii).reshape(-1, 3), dtype=torch.float32)
    boxes3d = torch.cat([centers_t.flip(1) - radii_t.flip(1), centers_t.flip(1) + radii_t.flip(1)], dim=1)
    truth = {
        "label": int(n_nodules > 0),
        "n_slices": depth,
        "spacing": (dz, dxy, dxy),
        "centers": centers_t,
        "radii": radii_t,
        "boxes3d": boxes3d,
        "slice_boxes": slice_boxes,
        "slice_nodules": slice_nodules,
        "slice_labels": torch.tensor([len(b) > 0 for b in slice_boxes], dtype=torch.int64),
        "nodule_mask": torch.from_numpy(nodule_alpha > 0.5),
        "vessel_mask": torch.from_numpy(vessel_alpha > 0.5),
        "lung_mask": torch.from_numpy(lungs),
    }
    return torch.from_numpy(vol), truth


def hu_window(volume, level: float = -600.0, width: float = 1500.0):
    """Map HU to [0, 1] through a display window (default: the lung window, level -600, width 1500)."""
    if not width > 0:
        raise ValueError(f"width must be positive (HU), got {width}")
    low = level - width / 2
    if isinstance(volume, torch.Tensor):
        return ((volume - low) / width).clamp(0.0, 1.0)
    return np.clip((np.asarray(volume, dtype=np.float32) - low) / width, 0.0, 1.0)


class CTVolumeDataset(torch.utils.data.Dataset):
    """``n_volumes`` synthetic CT volumes with a variable number of slices, generated on access.

    Item ``i`` is ``(volume, truth)``: volume float32 (n_slices, 1, size, size) — one channel per
    slice, ready for a 2-D CNN applied slice by slice — windowed to [0, 1] with ``window``
    (level, width) or left in HU when ``window=None``; truth is make_ct_volume's dict. Volume i
    is the same on every access and every machine (its seed derives from ``seed`` and ``i``).
    Batch with :func:`collate_ct_volumes`. Extra keyword arguments go to make_ct_volume.
    """

    def __init__(self, n_volumes: int, seed: int = 0, window=(-600.0, 1500.0), **volume_kwargs):
        self.n_volumes = _check_int("n_volumes", n_volumes, 1)
        self.seed = _check_int("seed", seed, 0, 2**63 - 1)
        if window is not None:
            try:
                level, width = (float(v) for v in window)
            except (TypeError, ValueError):
                raise TypeError(f"window must be (level, width) in HU or None, got {window!r}") from None
            if not width > 0:
                raise ValueError(f"window must be (level, width) with width > 0, got {window!r}")
            window = (level, width)
        self.window = window
        if "seed" in volume_kwargs:
            raise TypeError("seed is the dataset's argument; each volume's seed derives from it and the index")
        self.volume_kwargs = dict(volume_kwargs)
        # Generate one small volume now so that bad keyword arguments fail here, not in a worker.
        make_ct_volume(0, **self.volume_kwargs)

    def __len__(self) -> int:
        return self.n_volumes

    def volume_seed(self, index: int) -> int:
        # Independent streams per volume, stable across machines (SeedSequence hashing).
        return int(np.random.SeedSequence([self.seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)

    def __getitem__(self, index: int):
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if index < 0:
            index += self.n_volumes
        if not 0 <= index < self.n_volumes:
            raise IndexError(f"index {index} out of range for {self.n_volumes} volumes")
        volume, truth = make_ct_volume(self.volume_seed(int(index)), **self.volume_kwargs)
        if self.window is not None:
            volume = hu_window(volume, *self.window)
        return volume.unsqueeze(1), truth


def collate_ct_volumes(batch):
    """Pad a list of ``(volume, truth)`` items to the longest: returns (volumes, lengths, labels, truths).

    volumes float32 (B, max_slices, 1, H, W), zero-padded after each volume's last slice;
    lengths int64 (B,); labels int64 (B,) volume-level nodule labels; truths the list of dicts.
    """
    if not isinstance(batch, (list, tuple)) or not batch:
        raise ValueError("batch must be a non-empty list of (volume, truth) items")
    volumes = [item[0] for item in batch]
    if any(v.dim() != 4 for v in volumes) or len({tuple(v.shape[1:]) for v in volumes}) != 1:
        raise ValueError(f"volumes must all be (n_slices, C, H, W) with the same C, H, W; got "
                         f"{[tuple(v.shape) for v in volumes]}")
    lengths = torch.tensor([v.shape[0] for v in volumes], dtype=torch.int64)
    padded = volumes[0].new_zeros((len(volumes), int(lengths.max()), *volumes[0].shape[1:]))
    for i, v in enumerate(volumes):
        padded[i, : v.shape[0]] = v
    labels = torch.tensor([item[1]["label"] for item in batch], dtype=torch.int64)
    return padded, lengths, labels, [item[1] for item in batch]
