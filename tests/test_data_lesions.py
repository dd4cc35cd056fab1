"""Lesion detection phantoms (dlmi.data.lesions): determinism, boxes, real box statistics, splits."""
import numpy as np
import pytest
import torch

from dlmi.data.lesions import (LESION_CLASSES, SPLITS, LesionDataset, collate_detection,
                               make_lesion_image, nih_box_reference, plot_nih_box_statistics)

SIZE = 64


@pytest.fixture(scope="module")
def train():
    return LesionDataset("train", n=40, size=SIZE, seed=3)


def test_reference_table_is_the_nih_boxes_split_by_patient():
    ref = nih_box_reference()
    assert len(ref) == 984
    assert set(ref["lesion"]) == set(LESION_CLASSES)
    parts = {s: nih_box_reference(s) for s in SPLITS}
    assert sum(len(p) for p in parts.values()) == 984
    for a in SPLITS:
        assert set(parts[a]["lesion"]) == set(LESION_CLASSES), f"{a} lacks a class"
        for b in SPLITS:
            if a < b:
                assert not set(parts[a]["patient_id"]) & set(parts[b]["patient_id"])
    assert 0.6 < len(parts["train"]) / 984 < 0.8
    row = ref.iloc[0]
    assert row["w"] == pytest.approx((row["x2"] - row["x1"]) / 1024)


def test_dataset_item_format(train):
    image, target = train[0]
    assert image.dtype == torch.float32 and image.shape == (1, SIZE, SIZE)
    assert 0 <= image.min() and image.max() <= 1
    assert set(target) == {"boxes", "labels"}
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1:] == (4,)
    assert target["labels"].dtype == torch.int64
    assert len(target["boxes"]) == len(target["labels"])
    assert train.num_classes == len(LESION_CLASSES) + 1
    assert train.categories[0] == "__background__" and train.categories[1:] == LESION_CLASSES
    assert len(train) == 40 and train[-1][0].shape == (1, SIZE, SIZE)


def test_deterministic_and_order_independent(train):
    again = LesionDataset("train", n=40, size=SIZE, seed=3, cache=False)
    for i in (7, 2, 7, 0):
        a, ta = train[i]
        b, tb = again[i]
        assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
    other = LesionDataset("train", n=40, size=SIZE, seed=4)
    assert not torch.equal(train[0][0], other[0][0])
    one = make_lesion_image(SIZE, seed=11)
    two = make_lesion_image(SIZE, seed=11)
    assert np.array_equal(one.image, two.image) and np.array_equal(one.boxes, two.boxes)


def test_cache_is_not_edited_through_targets(train):
    _, target = train[1]
    target["boxes"] += 1000
    assert train[1][1]["boxes"].max() <= SIZE


def test_boxes_inside_image_labels_in_range_and_lesion_pixels_inside_box():
    rng = np.random.default_rng(0)
    counts = np.zeros(len(LESION_CLASSES), int)
    for i in range(60):
        case = make_lesion_image(SIZE, rng=rng, n_lesions=(1, 3), class_weights="uniform", return_masks=True)
        b = case.boxes
        assert case.image.dtype == np.float32 and case.image.shape == (SIZE, SIZE)
        assert np.all(b[:, :2] >= 0) and np.all(b[:, 2:] <= SIZE)
        assert np.all(b[:, 2] - b[:, 0] >= 2.9) and np.all(b[:, 3] - b[:, 1] >= 2.9)
        assert np.all((case.labels >= 1) & (case.labels <= len(LESION_CLASSES)))
        assert case.masks.shape == (len(b), SIZE, SIZE)
        for box, mask, name in zip(b, case.masks, case.names):
            counts[LESION_CLASSES.index(name)] += 1
            ys, xs = np.nonzero(mask)
            assert len(xs) > 0, f"{name} drew no pixel"
            # pixel (i, j) covers [j, j+1) x [i, i+1): its centre lies inside the box
            assert xs.min() + 0.5 >= box[0] and xs.max() + 0.5 <= box[2], name
            assert ys.min() + 0.5 >= box[1] and ys.max() + 0.5 <= box[3], name
        assert (case.labels == 2).sum() <= 1, "two hearts"
    assert counts.min() > 0, counts


def test_every_class_is_visible_in_its_box():
    # The lesion changes its box's pixels by a clear margin compared with the same image without it.
    for j, name in enumerate(LESION_CLASSES):
        with_it = make_lesion_image(96, seed=j, classes=(name,), n_lesions=1, noise=0.0, return_masks=True)
        without = make_lesion_image(96, seed=j, classes=(name,), n_lesions=0, noise=0.0)
        assert with_it.labels.tolist() == [1]
        mask = with_it.masks[0]
        change = np.abs(with_it.image - without.image)
        # same random stream up to the lesion: the anatomy is the same image
        assert change[~mask].max() <= 1.1e-4   # a mask holds the pixels changed by more than 1e-4
        assert np.percentile(change[mask], 90) > 0.04, f"{name} is too faint"


def test_box_statistics_follow_the_nih_table():
    ref = nih_box_reference()
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(700):
        case = make_lesion_image(128, rng=rng, n_lesions=1, class_weights="uniform")
        for box, name in zip(case.boxes, case.names):
            rows.append((name, *(box / 128)))
    names = np.array([r[0] for r in rows])
    boxes = np.array([r[1:] for r in rows], float)
    for name in LESION_CLASSES:
        mine = boxes[names == name]
        real = ref[ref["lesion"] == name]
        assert len(mine) > 50, name
        for got, want, what in ((mine[:, 2] - mine[:, 0], real["w"], "width"),
                                (mine[:, 3] - mine[:, 1], real["h"], "height")):
            assert np.median(got) == pytest.approx(np.median(want), rel=0.2), f"{name} median {what}"
        centre_y = (mine[:, 1] + mine[:, 3]) / 2
        assert np.median(centre_y) == pytest.approx(real["cy"].median(), abs=0.06), f"{name} centre y"
    # and the class frequencies follow the table with class_weights="nih"
    rng = np.random.default_rng(2)
    labels = np.concatenate([make_lesion_image(64, rng=rng, n_lesions=1).labels for _ in range(400)])
    share = np.bincount(labels, minlength=9)[1:] / len(labels)
    real_share = ref["lesion"].value_counts(normalize=True)[list(LESION_CLASSES)].to_numpy()
    assert np.abs(share - real_share).max() < 0.07


def test_splits_are_disjoint():
    sets = {s: LesionDataset(s, n=25, size=SIZE, seed=0) for s in SPLITS}
    ref = nih_box_reference()
    sources, anatomies, images = {}, {}, {}
    for s, ds in sets.items():
        cases = [ds.case(i) for i in range(len(ds))]
        sources[s] = set(np.concatenate([c.sources for c in cases]).tolist())
        assert set(ref.loc[sorted(sources[s]), "split"]) == {s}
        images[s] = {c.image.tobytes() for c in cases}
        anatomies[s] = ds  # anatomy banks are per split:
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not sources[a] & sources[b]
                assert not images[a] & images[b]
    from dlmi.data.lesions import _anatomy_bank
    banks = [_anatomy_bank(SIZE, s, 0, 16) for s in SPLITS]
    assert not np.array_equal(banks[0][0], banks[1][0]) and not np.array_equal(banks[1][0], banks[2][0])


def test_empty_images_and_collate():
    ds = LesionDataset("val", n=12, size=SIZE, seed=0, p_empty=1.0)
    image, target = ds[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    loader = torch.utils.data.DataLoader(LesionDataset("val", n=6, size=SIZE), batch_size=4,
                                         collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and len(images) == 4 and len(targets) == 4
    stacked, _ = collate_detection([ds[0], ds[1]], stack=True)
    assert stacked.shape == (2, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="one shape"):
        collate_detection([(torch.zeros(1, 4, 4), {}), (torch.zeros(1, 5, 5), {})], stack=True)
    with pytest.raises(ValueError, match="non-empty"):
        collate_detection([])


def test_subset_of_classes_numbers_labels_in_order():
    ds = LesionDataset("train", n=10, size=SIZE, classes=("nodule", "mass"), n_lesions=2)
    assert ds.classes == ("nodule", "mass") and ds.num_classes == 3
    labels = torch.cat([ds[i][1]["labels"] for i in range(len(ds))])
    assert set(labels.tolist()) <= {1, 2}
    case = ds.case(0)
    assert all(n in ("nodule", "mass") for n in case.names)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(split="validation"), ValueError, "split"),
    (dict(n=0), ValueError, "n must be"),
    (dict(size=16), ValueError, "size"),
    (dict(size=64.0), TypeError, "size"),
    (dict(classes=("nodule", "tumour")), ValueError, "unknown lesion classes"),
    (dict(classes=()), ValueError, "at least one"),
    (dict(n_lesions=(3, 1)), ValueError, "low <= high"),
    (dict(n_lesions="two"), TypeError, "n_lesions"),
    (dict(p_empty=1.5), ValueError, "p_empty"),
    (dict(class_weights="balanced"), ValueError, "class_weights"),
    (dict(noise=-0.1), ValueError, "noise"),
])
def test_bad_arguments(kwargs, error, match):
    args = dict(split="train", n=4, size=SIZE)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        LesionDataset(**args)


def test_bad_index_and_rng():
    ds = LesionDataset("test", n=3, size=SIZE)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(TypeError):
        ds[1.0]
    with pytest.raises(TypeError, match="Generator"):
        make_lesion_image(SIZE, rng=np.random.RandomState(0))


def test_plot_of_real_box_statistics():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = plot_nih_box_statistics()
    assert len(axes) == 3
    assert len(axes[0].collections) == len(LESION_CLASSES)
    plt.close("all")
    with pytest.raises(TypeError, match="nih_box_reference"):
        plot_nih_box_statistics(reference=[1, 2, 3])


def test_generation_is_fast():
    import time
    make_lesion_image(128, seed=0)  # banks
    start = time.perf_counter()
    for i in range(40):
        make_lesion_image(128, seed=i)
    per_image = (time.perf_counter() - start) / 40
    assert per_image < 0.05, f"{per_image * 1e3:.1f} ms per 128x128 image"  # ~2-5 ms; loose for busy CI
