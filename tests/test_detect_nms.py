"""dlmi.detect.nms / batched_nms against torchvision.ops: identical kept indices (order included)
on random boxes, tied scores, duplicate boxes, both batched strategies, threshold edge cases,
and both of dlmi's walks (tiles of nearby boxes, blocks in score order) on awkward geometry."""
import importlib

import numpy as np
import pytest
import torch

torchvision_ops = pytest.importorskip("torchvision.ops")
from torchvision.ops.boxes import _batched_nms_vanilla  # noqa: E402

from dlmi.detect import batched_nms, nms  # noqa: E402

nms_module = importlib.import_module("dlmi.detect.nms")   # the module (dlmi.detect.nms is the function)


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


# -- the two walks -----------------------------------------------------------------------------
# On the CPU dlmi picks the tile walk or the block walk by how crowded the boxes are; these tests
# force each one (and small tiles, so that a few boxes span many tiles and many steps).

@pytest.fixture(params=["auto", "tiles", "small tiles", "blocks"])
def walk(request, monkeypatch):
    if request.param in ("tiles", "small tiles"):
        monkeypatch.setattr(nms_module, "_CROWDED", float("inf"))
    if request.param == "small tiles":
        monkeypatch.setattr(nms_module, "_TILE", 4)
        monkeypatch.setattr(nms_module, "_TILE_PAIRS", 50)
    if request.param == "blocks":
        monkeypatch.setattr(nms_module, "_CROWDED", -1.0)
    return request.param


def awkward_sets():
    """(name, boxes, scores): geometry where finding only the nearby pairs could go wrong."""
    g = torch.Generator().manual_seed(5)
    sets = []
    far = torch.arange(300, dtype=torch.float32)[:, None] * 100 + torch.tensor([0.0, 0.0, 50.0, 50.0])
    sets.append(("far apart", far, torch.rand(300, generator=g)))
    centres = torch.rand(12, 1, 2, generator=g) * 5000          # clusters of 25 overlapping boxes
    jitter = torch.rand(12, 25, 2, generator=g) * 20
    corner = (centres + jitter).reshape(-1, 2)
    sets.append(("clusters", torch.cat([corner, corner + 30], 1), torch.rand(300, generator=g)))
    boxes, scores = random_detections(200, g, spread=1000.0, size=40.0)
    long = torch.tensor([[0.0, 100.0, 1000.0, 130.0], [500.0, 0.0, 520.0, 1000.0],
                         [0.0, 0.0, 1000.0, 1000.0], [0.0, 480.0, 1000.0, 520.0]])
    scores = torch.cat([scores, torch.rand(4, generator=g)])
    sets.append(("spanning many tiles", torch.cat([boxes, long]), scores))
    boxes, scores = random_detections(200, g, spread=100.0, size=20.0)
    boxes[::3, 2] = boxes[::3, 0]                                 # zero width
    boxes[1::3, 3] = boxes[1::3, 1]                               # zero height
    boxes[::7] = boxes[::7, :2].repeat(1, 2)                      # points
    boxes[::11] = boxes[0]                                        # duplicates
    sets.append(("degenerate", boxes, scores))
    grid = torch.cartesian_prod(torch.arange(12.0), torch.arange(12.0))
    sets.append(("touching", torch.cat([grid, grid + 1], 1) * 10, torch.rand(144, generator=g)))
    boxes, scores = random_detections(300, g, spread=400.0, size=80.0)
    sets.append(("negative", boxes - 250.0, scores))
    sets.append(("huge", boxes * 1e6, scores))
    sets.append(("areas overflow to inf", boxes * 1e18, scores))     # float32 areas become inf
    boxes, scores = random_detections(300, g, spread=400.0, size=80.0, ties=True)
    sets.append(("tied scores", boxes, scores))
    sets.append(("fewer than a tile", boxes[:3], scores[:3]))
    sets.append(("one box", boxes[:1], scores[:1]))
    return sets


@pytest.mark.parametrize("name, boxes, scores", awkward_sets(), ids=[s[0] for s in awkward_sets()])
def test_nms_walks_equal_torchvision_on_awkward_geometry(walk, name, boxes, scores):
    for threshold in (0.0, 0.1, 0.5, 0.9, 1.0):
        expected = torchvision_ops.nms(boxes, scores, threshold)
        assert torch.equal(nms(boxes, scores, threshold), expected), threshold
        assert torch.equal(nms(boxes.double(), scores.double(), threshold),
                           torchvision_ops.nms(boxes.double(), scores.double(), threshold)), threshold


@pytest.mark.parametrize("seed", range(4))
def test_nms_walks_equal_torchvision_sparse_to_dense(walk, seed):
    g = torch.Generator().manual_seed(20 + seed)
    spread = [3000.0, 1000.0, 300.0, 100.0][seed]               # nearly all kept ... few kept
    boxes, scores = random_detections(700, g, spread=spread, size=150.0, ties=seed % 2 == 1)
    for threshold in (0.3, 0.7):
        assert torch.equal(nms(boxes, scores, threshold), torchvision_ops.nms(boxes, scores, threshold))


@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_walks_equal_torchvision(walk, seed):
    g = torch.Generator().manual_seed(30 + seed)
    n = 1500                                                      # torchvision's per-category path
    boxes, scores = random_detections(n, g, spread=[2000.0, 500.0, 200.0][seed], size=100.0)
    # Few and many categories, category indices far apart (a tile can hold several categories).
    idxs = [torch.randint(0, 3, (n,), generator=g), torch.randint(0, 60, (n,), generator=g),
            torch.randint(0, 4, (n,), generator=g) * 10 ** 12][seed]
    for threshold in (0.0, 0.5):
        assert torch.equal(batched_nms(boxes, scores, idxs, threshold),
                           torchvision_ops.batched_nms(boxes, scores, idxs, threshold))


def test_nms_negative_threshold_removes_disjoint_boxes():
    # IoU 0 > -0.5: the first box removes every box with a real union, even far away; only two
    # zero-area boxes (IoU 0 / 0 = NaN) spare each other. The tile walk does not apply here.
    g = torch.Generator().manual_seed(3)
    boxes, scores = random_detections(300, g, spread=3000.0, size=50.0)
    assert nms(boxes, scores, -0.5).tolist() == torchvision_ops.nms(boxes, scores, -0.5).tolist()
    points = torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0], [1.0, 1.0, 2.0, 2.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(points, scores, -0.5).tolist() == torchvision_ops.nms(points, scores, -0.5).tolist() == [0, 1]
    # Past one block of candidates: the zero-area boxes of later blocks meet kept ones.
    points = torch.rand(600, 2, generator=g).repeat(1, 2) * 100
    points[::5, 2:] += 10.0                                       # a fifth with a real area
    scores = torch.rand(600, generator=g)
    assert torch.equal(nms(points, scores, -0.5), torchvision_ops.nms(points, scores, -0.5))


def test_nms_crowded_tiles_fall_back_to_blocks(monkeypatch):
    # Past _MAX_PAIRS "i removes j" pairs the tile walk gives up for the block walk; the answer
    # must not change.
    monkeypatch.setattr(nms_module, "_CROWDED", float("inf"))
    monkeypatch.setattr(nms_module, "_MAX_PAIRS", 50)
    g = torch.Generator().manual_seed(4)
    boxes, scores = random_detections(500, g, spread=200.0, size=100.0)
    idxs = torch.randint(0, 3, (500,), generator=g)
    assert torch.equal(nms(boxes, scores, 0.3), torchvision_ops.nms(boxes, scores, 0.3))
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.3), _batched_nms_vanilla(boxes, scores, idxs, 0.3))


def test_nms_half_precision_as_float32():
    # torchvision's CPU kernel has no float16/bfloat16; dlmi computes them in float32.
    g = torch.Generator().manual_seed(6)
    boxes, scores = random_detections(300, g, spread=400.0, size=80.0)
    for dtype in (torch.float16, torch.bfloat16):
        b, s = boxes.to(dtype), scores.to(dtype)
        assert torch.equal(nms(b, s, 0.5), torchvision_ops.nms(b.float(), s.float(), 0.5))


@pytest.mark.parametrize("seed", range(3))
def test_greedy_pass_equals_a_plain_loop(seed):
    g = torch.Generator().manual_seed(seed)
    suppresses = torch.rand(60, 60, generator=g) < [0.02, 0.1, 0.5][seed]
    removed, kept = np.zeros(60, dtype=bool), []
    for i in range(60):                  # the textbook loop: a kept box removes what it overlaps
        if not removed[i]:
            kept.append(i)
            removed[i + 1:] |= suppresses[i, i + 1:].numpy()
    assert nms_module._greedy(suppresses) == kept

