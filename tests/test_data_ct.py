"""dlmi.data.ct: synthetic chest CT volumes with nodules, their ground truth, dataset and collate."""
import time

import numpy as np
import pytest
import torch

from dlmi.data.ct import CTVolumeDataset, collate_ct_volumes, hu_window, make_ct_volume


@pytest.fixture(scope="module")
def volume():
    return make_ct_volume(7, n_slices=40, n_nodules=3)


def test_deterministic_from_the_seed():
    a, truth_a = make_ct_volume(11)
    b, truth_b = make_ct_volume(11)
    c, _ = make_ct_volume(12, n_slices=a.shape[0])
    assert torch.equal(a, b)
    assert torch.equal(truth_a["centers"], truth_b["centers"])
    assert all(torch.equal(x, y) for x, y in zip(truth_a["slice_boxes"], truth_b["slice_boxes"]))
    assert not torch.equal(a, c)


def test_shapes_types_and_slice_counts(volume):
    vol, truth = volume
    assert vol.shape == (40, 64, 64) and vol.dtype == torch.float32
    assert truth["n_slices"] == 40 and len(truth["slice_boxes"]) == 40
    assert truth["spacing"] == pytest.approx((300 / 40, 360 / 64, 360 / 64))
    for key in ("nodule_mask", "vessel_mask", "lung_mask"):
        assert truth[key].shape == vol.shape and truth[key].dtype == torch.bool
    assert truth["centers"].shape == truth["radii"].shape == (3, 3)
    assert truth["boxes3d"].shape == (3, 6)
    depths = {make_ct_volume(s, slice_range=(10, 20), size=32)[0].shape[0] for s in range(12)}
    assert depths <= set(range(10, 21)) and len(depths) > 3
    assert make_ct_volume(0, n_slices=9, size=48)[0].shape == (9, 48, 48)


def test_hounsfield_like_intensities(volume):
    vol, truth = volume
    assert vol[:, :3, :3].mean() < -950  # air in the corners
    lung = vol[truth["lung_mask"] & ~truth["vessel_mask"] & ~truth["nodule_mask"]]
    assert -900 < lung.median() < -780
    assert vol.max() > 300  # bone
    assert vol.min() >= -1024
    clean, truth = make_ct_volume(7, n_slices=40, n_nodules=3, noise_hu=0.0, blur=0.0)
    for c in truth["centers"]:
        z, y, x = c.long().tolist()
        assert -20 < clean[z, y, x] < 80  # solid nodules: soft-tissue density, as vessels


def test_boxes_match_the_rendered_nodules(volume):
    vol, truth = volume
    assert truth["label"] == 1
    for k, (boxes, ids) in enumerate(zip(truth["slice_boxes"], truth["slice_nodules"])):
        assert boxes.shape == (len(ids), 4)
        assert truth["slice_labels"][k] == int(len(ids) > 0)
        if len(boxes):
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            assert boxes.min() >= 0 and boxes.max() <= 64
        # every nodule pixel of the slice lies in one of its boxes (pixel i spans [i, i+1))
        ys, xs = torch.nonzero(truth["nodule_mask"][k], as_tuple=True)
        for y, x in zip(ys.tolist(), xs.tolist()):
            cx, cy = x + 0.5, y + 0.5
            inside = (boxes[:, 0] - 1 <= cx) & (cx <= boxes[:, 2] + 1) & (boxes[:, 1] - 1 <= cy) & (cy <= boxes[:, 3] + 1)
            assert inside.any(), (k, y, x)
        for box in boxes:  # and every box holds nodule pixels
            x1, y1, x2, y2 = box.tolist()
            assert truth["nodule_mask"][k, int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))].any()
    for c, r, box in zip(truth["centers"], truth["radii"], truth["boxes3d"]):
        assert truth["lung_mask"][tuple(c.long().tolist())]
        np.testing.assert_allclose(box.numpy(), np.r_[(c - r).flip(0).numpy(), (c + r).flip(0).numpy()], rtol=1e-6)
    # each nodule shows on at least one slice, however thick the slices
    assert set(torch.cat(truth["slice_nodules"]).tolist()) == {0, 1, 2}
    for seed in range(6):
        _, thick = make_ct_volume(seed, n_slices=5, size=32, nodule_prob=1.0)
        assert set(torch.cat(thick["slice_nodules"]).tolist()) == set(range(len(thick["centers"]))) != set()


def test_negative_volumes_and_nodule_probability():
    vol, truth = make_ct_volume(3, n_nodules=0, size=32, n_slices=12)
    assert truth["label"] == 0 and truth["centers"].shape == (0, 3)
    assert truth["slice_labels"].sum() == 0 and not truth["nodule_mask"].any()
    labels = [make_ct_volume(s, size=32, slice_range=(8, 12))[1]["label"] for s in range(40)]
    assert 8 <= sum(labels) <= 32  # nodule_prob=0.5
    assert all(make_ct_volume(s, size=32, n_slices=8, nodule_prob=1.0)[1]["label"] for s in range(5))


def test_a_voxel_count_does_not_find_nodules():
    # The reason for a CNN: the amount of soft tissue in the lungs (vessels + nodules) does not
    # tell volumes with nodules from volumes without; vessels vary more than nodules add.
    counts, labels = [], []
    for seed in range(36):
        vol, truth = make_ct_volume(seed, slice_range=(16, 24), size=48)
        counts.append(np.count_nonzero((vol.numpy() > -400) & truth["lung_mask"].numpy()))
        labels.append(truth["label"])
    counts, labels = np.array(counts), np.array(labels)
    assert 0 < labels.sum() < len(labels)
    pos, neg = counts[labels == 1][:, None], counts[labels == 0][None, :]
    auroc = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)  # Mann-Whitney
    assert auroc < 0.8


def test_vessels_cross_many_slices_nodules_few(volume):
    _, truth = volume
    vessel_slices = truth["vessel_mask"].flatten(1).any(1).sum().item()
    nodule_slices = truth["slice_labels"].sum().item()
    assert vessel_slices > 15
    assert nodule_slices <= 3 * 12  # each nodule spans a few slices


def test_fast_enough_for_a_dataloader():
    make_ct_volume(0, n_slices=48)
    times = []
    for seed in range(7):
        start = time.perf_counter()
        make_ct_volume(seed, n_slices=48, size=64)
        times.append(time.perf_counter() - start)
    # Typically ~15 ms on one free core; the bound leaves room for a loaded CI machine.
    assert np.median(times) < 0.25


def test_dataset_and_collate():
    data = CTVolumeDataset(6, seed=5, slice_range=(8, 16), size=32)
    assert len(data) == 6
    items = [data[i] for i in range(6)]
    lengths = [v.shape[0] for v, _ in items]
    assert len(set(lengths)) > 1  # variable number of slices
    v0, t0 = items[0]
    assert v0.shape[1:] == (1, 32, 32) and 0 <= v0.min() and v0.max() <= 1
    assert torch.equal(data[0][0], v0) and torch.equal(data[-6][0], v0)
    volumes, lens, labels, truths = collate_ct_volumes(items)
    assert volumes.shape == (6, max(lengths), 1, 32, 32)
    assert lens.tolist() == lengths and labels.tolist() == [t["label"] for _, t in items]
    for i, n in enumerate(lengths):
        assert torch.equal(volumes[i, :n], items[i][0]) and (volumes[i, n:] == 0).all()
    hu = CTVolumeDataset(2, seed=5, window=None, slice_range=(8, 16), size=32)[0][0]
    assert hu.min() < -900  # left in HU
    loader = torch.utils.data.DataLoader(data, batch_size=3, collate_fn=collate_ct_volumes)
    assert [b[0].shape[0] for b in loader] == [3, 3]


def test_hu_window():
    x = torch.tensor([-2000.0, -600.0, 1000.0])
    np.testing.assert_allclose(hu_window(x).numpy(), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(hu_window(np.array([40.0]), level=40, width=400), [0.5])
    with pytest.raises(ValueError, match="width"):
        hu_window(x, width=0)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"seed": True}, TypeError, "seed"),
    ({"seed": 0, "size": 16}, ValueError, "size"),
    ({"seed": 0, "n_slices": 2}, ValueError, "n_slices"),
    ({"seed": 0, "slice_range": (20, 10)}, ValueError, "slice_range"),
    ({"seed": 0, "slice_range": 10}, TypeError, "slice_range"),
    ({"seed": 0, "nodule_prob": 1.5}, ValueError, "nodule_prob"),
    ({"seed": 0, "n_nodules": -1}, ValueError, "n_nodules"),
    ({"seed": 0, "nodule_radius": (3, 1)}, ValueError, "nodule_radius"),
    ({"seed": 0, "noise_hu": -1}, ValueError, "noise_hu"),
    ({"seed": 0, "blur": float("nan")}, ValueError, "blur"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_ct_volume(**kwargs)


def test_impossible_nodule_count_is_an_error():
    with pytest.raises(RuntimeError, match="could not place 20 nodules"):
        make_ct_volume(0, size=32, n_slices=4, n_nodules=20)


def test_bad_dataset_arguments():
    with pytest.raises(ValueError, match="n_volumes"):
        CTVolumeDataset(0)
    with pytest.raises(TypeError, match="radius_of_doom"):  # a typo fails here, not in a worker
        CTVolumeDataset(2, seed=0, radius_of_doom=1)
    with pytest.raises(ValueError, match="width > 0"):
        CTVolumeDataset(2, window=(-600, 0))
    with pytest.raises(TypeError, match="level, width"):
        CTVolumeDataset(2, window=5)
    data = CTVolumeDataset(2, size=32, slice_range=(6, 8))
    with pytest.raises(IndexError):
        data[2]
    with pytest.raises(TypeError, match="index"):
        data["a"]
    with pytest.raises(ValueError, match="non-empty"):
        collate_ct_volumes([])
    with pytest.raises(ValueError, match="same C, H, W"):
        collate_ct_volumes([(torch.zeros(3, 1, 8, 8), {"label": 0}), (torch.zeros(3, 1, 9, 9), {"label": 0})])


def test_drawn_nodules_that_do_not_fit_are_dropped_not_an_error():
    # Large nodules in small, thin volumes: some drawn nodules cannot be placed. Every volume must
    # still be generated, with labels that say whether a nodule is really there.
    from dlmi.data import CTVolumeDataset

    ds = CTVolumeDataset(320, seed=0, size=32, slice_range=(6, 16), nodule_radius=(3.0, 5.0))
    for i in range(len(ds)):
        _, truth = ds[i]
        assert truth["label"] == int(len(truth["centers"]) > 0)
        assert truth["nodule_mask"].any() == bool(truth["label"])
