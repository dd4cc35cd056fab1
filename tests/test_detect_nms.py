"""dlmi.detect.nms / batched_nms against torchvision.ops: identical kept indices (order included)
on random boxes, tied scores, duplicate boxes, both batched strategies, threshold edge cases."""
import pytest
import torch

torchvision_ops = pytest.importorskip("torchvision.ops")
from torchvision.ops.boxes import _batched_nms_vanilla  # noqa: E402

from dlmi.detect import batched_nms, nms  # noqa: E402



def random_detections(n, generator, spread=300.0, size=60.0, dtype=torch.float32, ties=False):
    corner = torch.rand(n, 2, generator=generator, dtype=torch.float64) * spread
    extent = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size
    boxes = torch.cat([corner, corner + extent], 1).to(dtype)
    scores = torch.rand(n, generator=generator, dtype=torch.float64).to(dtype)
    if ties:   # few distinct scores: the order among equals decides which box survives
        scores = (scores * 4).round() / 4
    return boxes, scores


@pytest.mark.parametrize("seed", range(12))
def test_nms_equals_torchvision(seed):
    g = torch.Generator().manual_seed(seed)
    n = [1, 2, 7, 60, 300, 2000][seed % 6]
    dtype = torch.float64 if seed % 4 == 3 else torch.float32
    boxes, scores = random_detections(n, g, dtype=dtype, ties=seed % 2 == 1)
    for threshold in (0.0, 0.3, 0.5, 0.7, 1.0, float(torch.rand(1, generator=g))):
        expected = torchvision_ops.nms(boxes, scores, threshold)
        kept = nms(boxes, scores, threshold)
        assert kept.dtype == torch.int64
        assert torch.equal(kept, expected), (n, threshold)


def test_nms_duplicates_and_ties_keep_the_first_given():
    box = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    boxes = box.repeat(5, 1)
    scores = torch.tensor([0.5, 0.9, 0.9, 0.1, 0.9])
    assert torch.equal(nms(boxes, scores, 0.5), torchvision_ops.nms(boxes, scores, 0.5))
    assert nms(boxes, scores, 0.5).tolist() == [1]


def test_nms_threshold_compared_in_double_precision():
    # IoU = 30/100 is the float32 nearest to 0.3, which lies *above* the double 0.3: torchvision
    # suppresses (its kernel compares with the double), a float32 comparison would not.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 3.0]])
    scores = torch.tensor([1.0, 0.5])
    assert torchvision_ops.nms(boxes, scores, 0.3).tolist() == [0]
    assert nms(boxes, scores, 0.3).tolist() == [0]
    # ...and at 0.7 the float32 IoU 0.7f lies below the double 0.7: both keep the second box.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 7.0]])
    assert nms(boxes, scores, 0.7).tolist() == torchvision_ops.nms(boxes, scores, 0.7).tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(8))
def test_batched_nms_equals_torchvision(seed):
    g = torch.Generator().manual_seed(100 + seed)
    # 800 boxes take torchvision's offset-trick path, 1,600 its per-category path.
    n = [0, 5, 800, 1600][seed % 4]
    boxes, scores = random_detections(n, g, ties=seed >= 4)
    idxs = torch.randint(0, 1 + seed, (n,), generator=g)
    for threshold in (0.2, 0.5, 0.8):
        assert torch.equal(batched_nms(boxes, scores, idxs, threshold),
                           torchvision_ops.batched_nms(boxes, scores, idxs, threshold)), (n, threshold)


def test_batched_nms_never_suppresses_across_categories():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(4, 1)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    idxs = torch.tensor([0, 1, 0, 2])
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 1, 3]


def test_batched_nms_negative_coordinates_stay_per_category():
    # With coordinates below zero the offset trick could let categories touch; the result must
    # still be plain per-category NMS.
    g = torch.Generator().manual_seed(7)
    boxes, scores = random_detections(200, g, spread=50.0, size=30.0)
    boxes = boxes - 60.0
    idxs = torch.randint(0, 3, (200,), generator=g)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), _batched_nms_vanilla(boxes, scores, idxs, 0.5))


def test_empty_input_gives_empty_int64():
    for kept in (nms(torch.zeros(0, 4), torch.zeros(0), 0.5),
                 batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)):
        assert kept.shape == (0,) and kept.dtype == torch.int64


@pytest.mark.parametrize("call, error, words", [
    (lambda b, s, i: nms(b.long(), s, 0.5), TypeError, "floating-point"),
    (lambda b, s, i: nms(b, s[:-1], 0.5), ValueError, "scores must have shape [3]"),
    (lambda b, s, i: nms(b, s.long(), 0.5), TypeError, "scores"),
    (lambda b, s, i: nms(b, torch.tensor([0.1, float("nan"), 0.3]), 0.5), ValueError, "finite"),
    (lambda b, s, i: nms(b[:, :3], s, 0.5), ValueError, "[N, 4]"),
    (lambda b, s, i: nms(b.flip(1), s, 0.5), ValueError, "x1 <= x2"),
    (lambda b, s, i: nms(b, s, "0.5"), TypeError, "iou_threshold"),
    (lambda b, s, i: nms(b, s, float("nan")), ValueError, "iou_threshold"),
    (lambda b, s, i: batched_nms(b, s, i.float(), 0.5), TypeError, "integer"),
    (lambda b, s, i: batched_nms(b, s, i[:2], 0.5), ValueError, "idxs must have shape [3]"),
    (lambda b, s, i: batched_nms(b, s, -i - 1, 0.5), ValueError, "non-negative"),
])
def test_bad_input(call, error, words):
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    idxs = torch.tensor([0, 0, 1])
    with pytest.raises(error) as info:
        call(boxes, scores, idxs)
    assert words in str(info.value)


@pytest.mark.cuda
def test_nms_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(11)
    boxes, scores = random_detections(1500, g)
    idxs = torch.randint(0, 4, (1500,), generator=g)
    kept = nms(boxes.cuda(), scores.cuda(), 0.5)
    assert kept.device.type == "cuda"
    assert torch.equal(kept.cpu(), nms(boxes, scores, 0.5))
    # torchvision switches strategy at another size on the GPU: compare GPU with GPU.
    assert torch.equal(batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5),
                       torchvision_ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5))
