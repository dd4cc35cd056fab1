"""dlmi.detect.BoxCoder and AnchorGenerator against torchvision's detection utilities."""
import math

import pytest
import torch

pytest.importorskip("torchvision")
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchors  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402

from dlmi.detect import AnchorGenerator, BoxCoder  # noqa: E402



def positive_boxes(n, generator, dtype=torch.float32):
    corner = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 200
    extent = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 80 + 2
    return torch.cat([corner, corner + extent], 1).to(dtype)


WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (0.5, 2.0, 3.0, 0.25)]


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_equals_torchvision(weights, dtype):
    g = torch.Generator().manual_seed(1)
    gt, proposals = positive_boxes(50, g, dtype), positive_boxes(50, g, dtype)
    ours, theirs = BoxCoder(weights), TorchvisionBoxCoder(weights)
    torch.testing.assert_close(ours.encode_single(gt, proposals), theirs.encode_single(gt, proposals))
    split = [gt[:20], gt[20:35], gt[35:]], [proposals[:20], proposals[20:35], proposals[35:]]
    for a, b in zip(ours.encode(*split), theirs.encode(*split)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("classes", [1, 3])
def test_decode_equals_torchvision(weights, classes):
    g = torch.Generator().manual_seed(2)
    references = positive_boxes(40, g)
    # Large offsets so that the exp clip (log(1000 / 16)) is hit for some boxes.
    codes = torch.randn(40, 4 * classes, generator=g) * 6
    ours, theirs = BoxCoder(weights), TorchvisionBoxCoder(weights)
    torch.testing.assert_close(ours.decode_single(codes, references), theirs.decode_single(codes, references))
    per_image = [references[:15], references[15:]]
    decoded = ours.decode(codes, per_image)
    assert decoded.shape == (40, classes, 4)
    torch.testing.assert_close(decoded, theirs.decode(codes, per_image))


def test_decode_inverts_encode_and_clip_is_honoured():
    g = torch.Generator().manual_seed(3)
    gt, proposals = positive_boxes(30, g, torch.float64), positive_boxes(30, g, torch.float64)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(coder.decode_single(coder.encode_single(gt, proposals), proposals), gt)
    clip = 0.5
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0), bbox_xform_clip=clip)
    wide = coder.decode_single(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[0.0, 0.0, 4.0, 2.0]]))
    torch.testing.assert_close(wide, torch.tensor([[2 - 2 * math.exp(clip), 1 - math.exp(clip),
                                                    2 + 2 * math.exp(clip), 1 + math.exp(clip)]]))
    theirs = TorchvisionBoxCoder((1.0, 1.0, 1.0, 1.0), bbox_xform_clip=clip)
    torch.testing.assert_close(wide, theirs.decode_single(torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
                                                          torch.tensor([[0.0, 0.0, 4.0, 2.0]])))


def test_coder_known_values():
    # A proposal shifted right by half its width and twice as tall as the object.
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    target = coder.encode_single(torch.tensor([[5.0, 0.0, 15.0, 10.0]]), torch.tensor([[0.0, -5.0, 10.0, 15.0]]))
    torch.testing.assert_close(target, torch.tensor([[0.5, 0.0, 0.0, math.log(0.5)]]))


def test_coder_empty_and_bad_input():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    assert coder.encode_single(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 4), [torch.zeros(0, 4)]).shape == (0, 4)
    good = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match="positive width"):
        coder.encode_single(good, torch.tensor([[1.0, 1.0, 1.0, 3.0]]))
    # an all-zero reference box (image without objects) encodes to -inf sizes, as in torchvision
    zeros = torch.zeros(1, 4)
    torch.testing.assert_close(coder.encode_single(zeros, good),
                               TorchvisionBoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(zeros, good))
    with pytest.raises(ValueError, match="pair up"):
        coder.encode_single(good, good.repeat(2, 1))
    with pytest.raises(ValueError, match="x1 <= x2"):
        coder.encode_single(good, torch.tensor([[4.0, 0.0, 0.0, 4.0]]))
    with pytest.raises(ValueError, match="finite"):
        coder.decode_single(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), good)
    with pytest.raises(ValueError, match=r"shape \[1, 4 \* C\]"):
        coder.decode_single(torch.zeros(1, 5), good)
    with pytest.raises(TypeError, match="list"):
        coder.decode(torch.zeros(1, 4), good)
    with pytest.raises(ValueError, match="4 numbers per reference box"):
        coder.decode(torch.zeros(1, 6), [good])
    with pytest.raises(ValueError, match="one entry per image"):
        coder.encode([good], [good, good])
    with pytest.raises(ValueError, match="weights"):
        BoxCoder((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        BoxCoder((1.0, 1.0, 0.0, 1.0))


ANCHOR_SETTINGS = [
    (((32, 64, 128),), ((0.5, 1.0, 2.0),), [(25, 20)]),                            # Faster R-CNN's k = 9
    (((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3, [(32, 24), (16, 12), (8, 6)]),   # FPN-style levels
    ((24, 48), (1.0, 1.7), [(10, 9), (5, 4)]),                                       # flat tuples
    (((20, 40), (80,)), ((0.25, 1.0, 3.3), (1.0,)), [(13, 11), (7, 5)]),             # odd sizes, strides
]


@pytest.mark.parametrize("sizes, ratios, grids", ANCHOR_SETTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_anchor_generator_equals_torchvision(sizes, ratios, grids, dtype):
    images = ImageList(torch.zeros(2, 3, 100, 90), [(100, 90), (96, 80)])
    features = [torch.zeros(2, 8, h, w, dtype=dtype) for h, w in grids]
    ours, theirs = AnchorGenerator(sizes, ratios), TorchvisionAnchors(sizes, ratios)
    assert ours.num_anchors_per_location() == theirs.num_anchors_per_location()
    expected = theirs(images, features)
    for anchors in (ours(images, features), ours(images.tensors, features)):
        assert len(anchors) == 2
        for a, b in zip(anchors, expected):
            assert a.dtype == dtype
            assert torch.equal(a, b)


def test_anchor_layout_and_count():
    generator = AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),))
    anchors = generator(torch.zeros(1, 1, 64, 64), [torch.zeros(1, 4, 4, 4)])[0]
    assert anchors.shape == (4 * 4 * 6, 4)
    # Location (i, j) = (1, 2) has centre (2 * 16, 1 * 16); its anchors are rows (1*4 + 2)*6 ...
    block = anchors[(1 * 4 + 2) * 6:(1 * 4 + 2) * 6 + 6]
    torch.testing.assert_close((block[:, :2] + block[:, 2:]) / 2, torch.tensor([[32.0, 16.0]]).repeat(6, 1),
                               atol=0.5, rtol=0)
    areas = (block[:, 2] - block[:, 0]) * (block[:, 3] - block[:, 1])
    sides = torch.tensor([16.0, 32.0]).repeat(3) ** 2
    torch.testing.assert_close(areas, sides, rtol=0.15, atol=0)    # whole-pixel rounding


def test_anchor_bad_input():
    with pytest.raises(ValueError, match="positive"):
        AnchorGenerator(((16, -32),), ((1.0,),))
    with pytest.raises(ValueError, match="positive"):
        AnchorGenerator(((16,),), ((0.0, 1.0),))
    with pytest.raises(ValueError, match="one entry per feature map"):
        AnchorGenerator(((16,), (32,)), ((1.0,), (1.0,), (2.0,)))
    generator = AnchorGenerator(((16,), (32,)), ((1.0,), (1.0,)))
    images = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="2 feature maps|anchors for 2"):
        generator(images, [torch.zeros(1, 4, 8, 8)])
    with pytest.raises(ValueError, match=r"Tensor\[N, C, H, W\]"):
        generator(images, [torch.zeros(4, 8, 8), torch.zeros(1, 4, 4, 4)])
    with pytest.raises(ValueError, match="cannot come from"):
        generator(images, [torch.zeros(1, 4, 128, 8), torch.zeros(1, 4, 4, 4)])
    with pytest.raises(TypeError, match="ImageList"):
        generator([images], [torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 4, 4)])
    with pytest.raises(ValueError, match=r"Tensor\[N, C, H, W\]"):
        generator(torch.zeros(3, 64, 64), [torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 4, 4)])
    with pytest.raises(TypeError, match="floating"):
        generator(images, [torch.zeros(1, 4, 8, 8, dtype=torch.long), torch.zeros(1, 4, 4, 4)])


@pytest.mark.cuda
def test_coder_and_anchors_on_cuda():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    g = torch.Generator().manual_seed(5)
    gt, proposals = positive_boxes(20, g), positive_boxes(20, g)
    torch.testing.assert_close(coder.encode_single(gt.cuda(), proposals.cuda()).cpu(),
                               coder.encode_single(gt, proposals))
    generator = AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),))
    anchors = generator(torch.zeros(1, 1, 64, 64, device="cuda"), [torch.zeros(1, 4, 8, 8, device="cuda")])[0]
    assert anchors.device.type == "cuda"
    assert torch.equal(anchors.cpu(), generator(torch.zeros(1, 1, 64, 64), [torch.zeros(1, 4, 8, 8)])[0])
