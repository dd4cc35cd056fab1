"""dlmi.detect.mean_average_precision against pycocotools (through torchmetrics'
MeanAveragePrecision, backend="pycocotools") on seeded random sets and degenerate ones, the VOC
interpolations against a hand-computed example and the classic devkit formula, and bad input."""
import contextlib
import io
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")
torchmetrics_detection = pytest.importorskip("torchmetrics.detection")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from dlmi.detect import average_precision, mean_average_precision  # noqa: E402



# -- data -----------------------------------------------------------------------------------------
def make_set(seed, images=24, classes=4, max_gt=6, crowd=False, ties=False, integer=False,
             area=False, crowded_image=False):
    """Ground truth plus detections that are jittered copies (some relabelled, some missing)
    and random false positives: enough hits to make every number non-trivial."""
    g = torch.Generator().manual_seed(seed)
    predictions, targets = [], []
    for i in range(images):
        n = int(torch.randint(0, max_gt + 1, (1,), generator=g))
        if crowded_image and i == 0:
            n = 40
        corner = torch.rand(n, 2, generator=g) * 200
        size = torch.rand(n, 2, generator=g) ** 2 * 150 + 1      # small, medium and large
        boxes = torch.cat([corner, corner + size], 1)
        labels = torch.randint(0, classes, (n,), generator=g)
        target = {"boxes": boxes, "labels": labels}
        if crowd:
            target["iscrowd"] = (torch.rand(n, generator=g) < 0.2).long()
        if area:
            target["area"] = torch.where(torch.rand(n, generator=g) < 0.5, size.prod(1) * 0.7, torch.zeros(n))
        hit = torch.rand(n, generator=g) < 0.8
        copies = boxes[hit] + torch.randn(int(hit.sum()), 4, generator=g) * size[hit].repeat(1, 2) * 0.1
        copies = torch.cat([torch.minimum(copies[:, :2], copies[:, 2:]),
                            torch.maximum(copies[:, :2], copies[:, 2:])], 1)
        copy_labels = labels[hit].clone()
        relabel = torch.rand(len(copy_labels), generator=g) < 0.1
        copy_labels[relabel] = torch.randint(0, classes, (int(relabel.sum()),), generator=g)
        extra = 150 if (crowded_image and i == 0) else int(torch.randint(0, 5, (1,), generator=g))
        corner = torch.rand(extra, 2, generator=g) * 200
        noise = torch.cat([corner, corner + torch.rand(extra, 2, generator=g) * 100 + 1], 1)
        pred_boxes = torch.cat([copies, noise])
        pred_labels = torch.cat([copy_labels, torch.randint(0, classes, (extra,), generator=g)])
        scores = torch.rand(len(pred_boxes), generator=g)
        if ties:
            scores = (scores * 4).round() / 4
        if integer:
            pred_boxes, target["boxes"] = pred_boxes.round(), target["boxes"].round()
        predictions.append({"boxes": pred_boxes, "scores": scores, "labels": pred_labels})
        targets.append(target)
    return predictions, targets


def torchmetrics_map(predictions, targets, **options):
    metric = torchmetrics_detection.MeanAveragePrecision(backend="pycocotools", **options)
    metric.warn_on_many_detections = False     # the crowded image has more than 100 on purpose
    metric.update(predictions, targets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric.compute()


def assert_same(ours, reference, keys=None):
    keys = keys if keys is not None else [k for k in reference if k != "ious"]
    for key in keys:
        a = ours[key].double().reshape(-1)
        b = reference[key].double().reshape(-1)
        assert a.shape == b.shape, key
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=lambda m: f"{key}: {m}")


# -- equality with pycocotools ---------------------------------------------------------------------
RANDOM_SETS = [
    dict(),
    dict(ties=True),
    dict(crowd=True),
    dict(integer=True, ties=True),
    dict(area=True, crowd=True),
    dict(classes=1, max_gt=10),
    dict(classes=12, images=40),
    dict(crowded_image=True),
    dict(crowd=True, ties=True, integer=True),
    dict(images=3, max_gt=2),
]


@pytest.mark.parametrize("seed, options", list(enumerate(RANDOM_SETS)))
def test_equals_pycocotools_on_random_sets(seed, options):
    predictions, targets = make_set(seed, **options)
    ours = mean_average_precision(predictions, targets, class_metrics=True, extended_summary=True)
    reference = torchmetrics_map(predictions, targets, class_metrics=True, extended_summary=True)
    assert_same(ours, reference)
    assert 0 < float(ours["map"]) < 1


@pytest.mark.parametrize("seed", range(3))
def test_equals_pycocotools_with_other_thresholds(seed):
    predictions, targets = make_set(50 + seed, crowd=seed == 1, ties=seed == 2)
    options = dict(iou_thresholds=[0.3, 0.5, 0.75, 0.9], rec_thresholds=[0.0, 0.2, 0.25, 0.5, 0.9, 1.0],
                   max_detection_thresholds=[2, 5, 100])
    assert_same(mean_average_precision(predictions, targets, class_metrics=True, extended_summary=True, **options),
                torchmetrics_map(predictions, targets, class_metrics=True, extended_summary=True, **options))


def test_max_detections_without_100():
    # pycocotools computes `map` at exactly 100 detections (-1 otherwise); we use the largest
    # threshold. Every other number agrees.
    predictions, targets = make_set(60, crowded_image=True)
    ours = mean_average_precision(predictions, targets, max_detection_thresholds=[1, 10, 50], extended_summary=True)
    reference = torchmetrics_map(predictions, targets, max_detection_thresholds=[1, 10, 50], extended_summary=True)
    assert float(reference["map"]) == -1
    assert_same(ours, reference, keys=[k for k in reference if k not in ("map", "ious")])
    precision = ours["precision"][:, :, :, 0, -1]
    assert float(ours["map"]) == pytest.approx(float(precision[precision > -1].mean()), abs=1e-6)


def empty(n=0):
    return {"boxes": torch.zeros(n, 4), "scores": torch.zeros(n), "labels": torch.zeros(n, dtype=torch.long)}


def box(x, y, w, h):
    return [float(x), float(y), float(x + w), float(y + h)]


DEGENERATE = {
    "no predictions": (
        [empty(), empty()],
        [{"boxes": torch.tensor([box(0, 0, 10, 10)]), "labels": torch.tensor([1])},
         {"boxes": torch.tensor([box(5, 5, 40, 40)]), "labels": torch.tensor([2])}]),
    "no targets": (
        [{"boxes": torch.tensor([box(0, 0, 10, 10)]), "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}],
        [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]),
    "no boxes at all": (
        [empty(), empty()], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2),
    "images without boxes": (
        [empty(), {"boxes": torch.tensor([box(0, 0, 10, 10), box(1, 1, 10, 10)]), "scores": torch.tensor([0.9, 0.3]),
                   "labels": torch.tensor([0, 0])}, empty()],
        [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
         {"boxes": torch.tensor([box(0, 0, 10, 10)]), "labels": torch.tensor([0])},
         {"boxes": torch.tensor([box(50, 50, 100, 100)]), "labels": torch.tensor([0])}]),
    "classes only in predictions or only in targets": (
        [{"boxes": torch.tensor([box(0, 0, 10, 10), box(0, 0, 10, 10), box(30, 30, 50, 50)]),
          "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 5, 7])}],
        [{"boxes": torch.tensor([box(0, 0, 10, 10), box(60, 60, 10, 10)]), "labels": torch.tensor([0, 3])}]),
    "all scores tied, duplicates on one object": (
        [{"boxes": torch.tensor([box(0, 0, 10, 10)] * 3 + [box(1, 1, 10, 10), box(40, 40, 5, 5)]),
          "scores": torch.full((5,), 0.5), "labels": torch.zeros(5, dtype=torch.long)}],
        [{"boxes": torch.tensor([box(0, 0, 10, 10), box(1, 1, 10, 10)]), "labels": torch.tensor([0, 0])}]),
    "only crowd ground truth": (
        [{"boxes": torch.tensor([box(0, 0, 10, 10), box(2, 2, 3, 3)]), "scores": torch.tensor([0.9, 0.8]),
          "labels": torch.tensor([0, 0])}],
        [{"boxes": torch.tensor([box(0, 0, 20, 20)]), "labels": torch.tensor([0]), "iscrowd": torch.tensor([1])}]),
    "crowd beside a regular object": (
        [{"boxes": torch.tensor([box(0, 0, 10, 10), box(0, 0, 9, 10), box(2, 2, 3, 3), box(50, 50, 40, 40)]),
          "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "labels": torch.tensor([0, 0, 0, 0])}],
        [{"boxes": torch.tensor([box(0, 0, 10, 10), box(0, 0, 20, 20), box(50, 50, 40, 40)]),
          "labels": torch.tensor([0, 0, 0]), "iscrowd": torch.tensor([0, 1, 0])}]),
    "IoU exactly on the thresholds": (
        # 10x10 object, detections overlapping it with IoU exactly 0.5 and 0.75 (integer boxes)
        [{"boxes": torch.tensor([box(0, 0, 10, 5), box(0, 0, 10, 7.5), box(0, 0, 10, 10)]),
          "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 0, 0])}],
        [{"boxes": torch.tensor([box(0, 0, 10, 10)]), "labels": torch.tensor([0])}]),
    "area exactly on the size boundaries": (
        [{"boxes": torch.tensor([box(0, 0, 32, 32), box(100, 100, 96, 96)]), "scores": torch.tensor([0.9, 0.8]),
          "labels": torch.tensor([0, 0])}],
        [{"boxes": torch.tensor([box(0, 0, 32, 32), box(100, 100, 96, 96)]), "labels": torch.tensor([0, 0])}]),
    "single perfect detection": (
        [{"boxes": torch.tensor([box(3, 4, 50, 60)]), "scores": torch.tensor([1.0]), "labels": torch.tensor([2])}],
        [{"boxes": torch.tensor([box(3, 4, 50, 60)]), "labels": torch.tensor([2])}]),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_sets_equal_pycocotools(name):
    predictions, targets = DEGENERATE[name]
    ours = mean_average_precision(predictions, targets, class_metrics=True, extended_summary=True)
    reference = torchmetrics_map(predictions, targets, class_metrics=True, extended_summary=True)
    assert_same(ours, reference)


def test_degenerate_values():
    ours = mean_average_precision(*DEGENERATE["no predictions"])
    assert float(ours["map"]) == 0 and float(ours["mar_100"]) == 0
    ours = mean_average_precision(*DEGENERATE["no targets"])
    assert all(float(ours[k]) == -1 for k in ("map", "map_50", "mar_100"))
    ours = mean_average_precision([], [])
    assert float(ours["map"]) == -1 and ours["classes"].numel() == 0
    ours = mean_average_precision(*DEGENERATE["single perfect detection"], class_metrics=True)
    assert float(ours["map"]) == 1 and ours["classes"].tolist() == [2] and ours["map_per_class"].tolist() == [1.0]
    ours = mean_average_precision(*DEGENERATE["classes only in predictions or only in targets"], class_metrics=True)
    assert ours["classes"].tolist() == [0, 3, 5, 7]
    assert ours["map_per_class"].tolist() == [1.0, 0.0, -1.0, -1.0]   # -1: no ground truth


def test_empty_image_lists_match_torchmetrics():
    reference = torchmetrics_map([], [])
    assert_same(mean_average_precision([], []), reference, keys=[k for k in reference if k != "classes"])


# -- VOC interpolations ---------------------------------------------------------------------------
def voc_example():
    """5 objects in 2 images; detections in score order are TP TP FP FP TP FP TP."""
    targets = [{"boxes": torch.tensor([box(0, 0, 10, 10), box(20, 20, 10, 10)]), "labels": torch.tensor([0, 0])},
               {"boxes": torch.tensor([box(0, 0, 10, 10), box(50, 50, 10, 10), box(70, 70, 10, 10)]),
                "labels": torch.tensor([0, 0, 0])}]
    predictions = [{"boxes": torch.tensor([box(0, 0, 10, 10), box(100, 100, 10, 10), box(0, 0, 10, 10),
                                           box(20, 20, 10, 10)]),
                    "scores": torch.tensor([0.9, 0.7, 0.6, 0.3]), "labels": torch.zeros(4, dtype=torch.long)},
                   {"boxes": torch.tensor([box(0, 0, 10, 10), box(50, 50, 10, 10), box(200, 200, 10, 10)]),
                    "scores": torch.tensor([0.8, 0.5, 0.4]), "labels": torch.zeros(3, dtype=torch.long)}]
    return predictions, targets


# recall    .2  .4  .4   .4   .6   .6   .8
# precision  1   1  2/3  1/2  3/5  1/2  4/7     envelope: 1 1 2/3 3/5 3/5 4/7 4/7
VOC_ALL_POINT = 0.2 * 1 + 0.2 * 1 + 0.2 * 3 / 5 + 0.2 * 4 / 7
VOC_11_POINT = (5 * 1 + 2 * 3 / 5 + 2 * 4 / 7 + 2 * 0) / 11
COCO_101_POINT = (41 * 1 + 20 * 3 / 5 + 20 * 4 / 7 + 20 * 0) / 101


def test_voc_example_by_hand():
    predictions, targets = voc_example()
    at_half = dict(iou_thresholds=[0.5])
    assert float(mean_average_precision(predictions, targets, interpolation="all", **at_half)["map"]) \
        == pytest.approx(VOC_ALL_POINT, abs=1e-7)
    assert float(mean_average_precision(predictions, targets, interpolation="11", **at_half)["map"]) \
        == pytest.approx(VOC_11_POINT, abs=1e-7)
    exact = [i / 100 for i in range(101)]
    assert float(mean_average_precision(predictions, targets, rec_thresholds=exact, **at_half)["map"]) \
        == pytest.approx(COCO_101_POINT, abs=1e-7)
    recall = torch.tensor([0.2, 0.4, 0.4, 0.4, 0.6, 0.6, 0.8])
    precision = torch.tensor([1, 1, 2 / 3, 1 / 2, 3 / 5, 1 / 2, 4 / 7])
    assert float(average_precision(recall, precision, "all")) == pytest.approx(VOC_ALL_POINT, abs=1e-7)
    assert float(average_precision(recall, precision, "11")) == pytest.approx(VOC_11_POINT, abs=1e-7)
    assert float(average_precision(recall, precision, "101", rec_thresholds=exact)) \
        == pytest.approx(COCO_101_POINT, abs=1e-7)


def classic_voc_ap(recall, precision, use_07_metric):
    """The PASCAL VOC devkit's AP, written out with plain Python lists."""
    recall, precision = list(recall), list(precision)
    if use_07_metric:
        total = 0.0
        for t in [i / 10 for i in range(11)]:
            total += max([p for r, p in zip(recall, precision) if r >= t], default=0.0) / 11
        return total
    mrec, mpre = [0.0] + recall + [1.0], [0.0] + precision + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


@pytest.mark.parametrize("seed", range(20))
def test_average_precision_equals_the_classic_formula(seed):
    g = torch.Generator().manual_seed(seed)
    n, positives = int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(1, 30, (1,), generator=g))
    hits = (torch.rand(n, generator=g) < 0.5).double()
    hits[torch.cumsum(hits, 0) > positives] = 0          # at most `positives` true positives
    tp = torch.cumsum(hits, 0)
    recall = tp / positives
    precision = tp / torch.arange(1, n + 1, dtype=torch.float64)
    for interpolation, use_07 in (("all", False), ("11", True)):
        assert float(average_precision(recall, precision, interpolation)) == pytest.approx(
            classic_voc_ap(recall.tolist(), precision.tolist(), use_07), abs=1e-12)


def pycocotools_curves(predictions, targets, threshold=0.5):
    """Per-class recall/precision curves from pycocotools' own matching (area 'all', 100
    detections), for the VOC oracle."""
    gt, dt = COCO(), COCO()
    images, gt_annotations, dt_annotations = [], [], []
    for i, (p, t) in enumerate(zip(predictions, targets)):
        images.append({"id": i})
        for b, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            gt_annotations.append({"id": len(gt_annotations) + 1, "image_id": i, "bbox": [b[0], b[1], w, h],
                                   "area": w * h, "category_id": label, "iscrowd": 0})
        for b, s, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            dt_annotations.append({"id": len(dt_annotations) + 1, "image_id": i, "bbox": [b[0], b[1], w, h],
                                   "area": w * h, "category_id": label, "iscrowd": 0, "score": s})
    labels = sorted({a["category_id"] for a in gt_annotations + dt_annotations})
    gt.dataset = {"images": images, "annotations": gt_annotations, "categories": [{"id": c} for c in labels]}
    dt.dataset = {"images": images, "annotations": dt_annotations, "categories": [{"id": c} for c in labels]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt.createIndex()
        evaluation = COCOeval(gt, dt, iouType="bbox")
        evaluation.params.iouThrs = np.array([threshold])
        evaluation.evaluate()
    curves = []
    images_count = len(evaluation.params.imgIds)
    for k in range(len(evaluation.params.catIds)):
        found = [e for e in evaluation.evalImgs[k * 4 * images_count:k * 4 * images_count + images_count] if e]
        if not found:
            continue
        scores = np.concatenate([e["dtScores"] for e in found])
        order = np.argsort(-scores, kind="mergesort")
        matched = np.concatenate([e["dtMatches"][0] for e in found])[order] > 0
        ignored = np.concatenate([e["dtIgnore"][0] for e in found])[order] > 0
        positives = int(np.count_nonzero(np.concatenate([e["gtIgnore"] for e in found]) == 0))
        if positives == 0:
            continue
        tp = np.cumsum(matched & ~ignored)
        fp = np.cumsum(~matched & ~ignored)
        curves.append(((tp / positives).tolist(), (tp / np.maximum(tp + fp, np.finfo(float).eps)).tolist()))
    return curves


@pytest.mark.parametrize("seed", range(4))
def test_voc_map_on_pycocotools_matches_equals_the_classic_formula(seed):
    predictions, targets = make_set(200 + seed, ties=seed % 2 == 1)
    curves = pycocotools_curves(predictions, targets)
    for interpolation, use_07 in (("all", False), ("11", True)):
        expected = np.mean([classic_voc_ap(r, p, use_07) for r, p in curves])
        ours = mean_average_precision(predictions, targets, iou_thresholds=[0.5], interpolation=interpolation)
        assert float(ours["map"]) == pytest.approx(expected, abs=1e-6)


def test_voc_11_point_equals_coco_sampling_at_11_recalls():
    predictions, targets = make_set(7, crowd=True)
    eleven = [i / 10 for i in range(11)]
    reference = torchmetrics_map(predictions, targets, iou_thresholds=[0.5], rec_thresholds=eleven)
    ours = mean_average_precision(predictions, targets, iou_thresholds=[0.5], interpolation="11")
    assert_same(ours, reference, keys=["map", "map_50", "map_small", "map_medium", "map_large"])


# -- bad input ------------------------------------------------------------------------------------
def good():
    return ([{"boxes": torch.tensor([box(0, 0, 10, 10)]), "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}],
            [{"boxes": torch.tensor([box(0, 0, 10, 10)]), "labels": torch.tensor([1])}])


def edit(part, key, value):
    predictions, targets = good()
    item = (predictions if part == "p" else targets)[0]
    if value is None:
        del item[key]
    else:
        item[key] = value
    return predictions, targets


BAD = [
    ("mismatched lengths", lambda: (good()[0] * 2, good()[1]), ValueError, "one entry per image"),
    ("not a list", lambda: (good()[0][0], good()[1]), TypeError, "list of dicts"),
    ("not a dict", lambda: ([torch.zeros(1, 4)], good()[1]), TypeError, "must be a dict"),
    ("missing scores", lambda: edit("p", "scores", None), ValueError, "missing ['scores']"),
    ("missing labels", lambda: edit("t", "labels", None), ValueError, "missing ['labels']"),
    ("boxes not a tensor", lambda: edit("p", "boxes", [[0, 0, 1, 1]]), TypeError, "torch.Tensor"),
    ("boxes of width 5", lambda: edit("t", "boxes", torch.zeros(1, 5)), ValueError, "[N, 4]"),
    ("x2 < x1", lambda: edit("t", "boxes", torch.tensor([[10.0, 0, 0, 10]])), ValueError, "targets[0]['boxes'][0]"),
    ("NaN box", lambda: edit("p", "boxes", torch.tensor([[0.0, 0, float("nan"), 10]])), ValueError, "not finite"),
    ("inf box", lambda: edit("t", "boxes", torch.tensor([[0.0, 0, float("inf"), 10]])), ValueError, "not finite"),
    ("negative label", lambda: edit("p", "labels", torch.tensor([-1])), ValueError, "class indices"),
    ("float labels", lambda: edit("t", "labels", torch.tensor([1.0])), TypeError, "integer"),
    ("labels length", lambda: edit("t", "labels", torch.tensor([1, 2])), ValueError, "shape [1]"),
    ("integer scores", lambda: edit("p", "scores", torch.tensor([1])), TypeError, "floating-point"),
    ("NaN score", lambda: edit("p", "scores", torch.tensor([float("nan")])), ValueError, "finite"),
    ("iscrowd 2", lambda: edit("t", "iscrowd", torch.tensor([2])), ValueError, "iscrowd"),
    ("area length", lambda: edit("t", "area", torch.tensor([1.0, 2.0])), ValueError, "shape [1]"),
]


@pytest.mark.parametrize("name", [b[0] for b in BAD])
def test_bad_input(name):
    _, make, error, words = next(b for b in BAD if b[0] == name)
    predictions, targets = make()
    with pytest.raises(error) as info:
        mean_average_precision(predictions, targets)
    assert words in str(info.value)


@pytest.mark.parametrize("options, error, words", [
    (dict(iou_type="segm"), ValueError, "bbox"),
    (dict(interpolation="voc"), ValueError, "interpolation"),
    (dict(iou_thresholds=[0.5, 1.5]), ValueError, "[0, 1]"),
    (dict(rec_thresholds=[0.5, 0.1]), ValueError, "increasing"),
    (dict(max_detection_thresholds=[0, 10]), ValueError, "positive ints"),
    (dict(num_classes=1), ValueError, "0..0"),
    (dict(class_metrics="yes"), TypeError, "True or False"),
])
def test_bad_options(options, error, words):
    with pytest.raises(error) as info:
        mean_average_precision(*good(), **options)
    assert words in str(info.value)


def test_average_precision_bad_input():
    with pytest.raises(ValueError, match="non-decreasing"):
        average_precision(torch.tensor([0.5, 0.2]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="same length"):
        average_precision(torch.tensor([0.5]), torch.tensor([1.0, 1.0]))
    with pytest.raises(TypeError, match="floating-point"):
        average_precision([0.5], torch.tensor([1.0]))


@pytest.mark.cuda
def test_inputs_on_cuda():
    predictions, targets = make_set(3)
    moved = ([{k: v.cuda() for k, v in p.items()} for p in predictions],
             [{k: v.cuda() for k, v in t.items()} for t in targets])
    assert_same(mean_average_precision(*moved), mean_average_precision(predictions, targets))
