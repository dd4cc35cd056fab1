"""dlmi.detect.boxes against torchvision.ops: IoU, areas, format conversion, clipping, small boxes,
and the checks that turn malformed boxes into clear errors."""
import pytest
import torch

torchvision_ops = pytest.importorskip("torchvision.ops")

from dlmi.detect import (box_area, box_convert, box_iou, check_boxes, clip_boxes_to_image,  # noqa: E402
                         remove_small_boxes)



def random_boxes(n, generator, spread=100.0, size=40.0, dtype=torch.float32):
    corner = torch.rand(n, 2, generator=generator, dtype=torch.float64) * spread
    extent = torch.rand(n, 2, generator=generator, dtype=torch.float64) * size
    return torch.cat([corner, corner + extent], 1).to(dtype)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_iou_equals_torchvision(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    a = random_boxes(int(torch.randint(1, 60, (1,), generator=g)), g, dtype=dtype)
    b = random_boxes(int(torch.randint(1, 60, (1,), generator=g)), g, dtype=dtype)
    # Same float operations in the same order: bit-identical, not just close.
    assert torch.equal(box_iou(a, b), torchvision_ops.box_iou(a, b))
    assert torch.equal(box_area(a), torchvision_ops.box_area(a))


def test_box_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [10.0, 10.0, 20.0, 20.0],
                      [2.0, 2.0, 4.0, 4.0]])
    expected = torch.tensor([[1.0, 50 / 150, 0.0, 4 / 100]])
    torch.testing.assert_close(box_iou(a, b), expected)


def test_box_iou_integer_boxes_and_batches():
    g = torch.Generator().manual_seed(3)
    a = random_boxes(7, g).round().long()
    b = random_boxes(5, g).round().int()
    assert torch.equal(box_iou(a, b), torchvision_ops.box_iou(a, b))
    batch1, batch2 = random_boxes(24, g).reshape(3, 8, 4), random_boxes(15, g).reshape(3, 5, 4)
    torch.testing.assert_close(box_iou(batch1, batch2), torchvision_ops.box_iou(batch1, batch2))


@pytest.mark.parametrize("fmt", ["xywh", "cxcywh"])
def test_box_convert_and_formats(fmt):
    g = torch.Generator().manual_seed(4)
    xyxy = random_boxes(30, g, dtype=torch.float64)
    converted = box_convert(xyxy, "xyxy", fmt)
    torch.testing.assert_close(converted, torchvision_ops.box_convert(xyxy, "xyxy", fmt))
    torch.testing.assert_close(box_convert(converted, fmt, "xyxy"), xyxy)
    torch.testing.assert_close(box_convert(converted, fmt, "cxcywh" if fmt == "xywh" else "xywh"),
                               torchvision_ops.box_convert(converted, fmt, "cxcywh" if fmt == "xywh" else "xywh"))
    torch.testing.assert_close(box_iou(converted, converted, fmt=fmt), box_iou(xyxy, xyxy))
    torch.testing.assert_close(box_area(converted, fmt=fmt), box_area(xyxy))


def test_empty_inputs_give_empty_results():
    empty = torch.zeros(0, 4)
    some = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert box_iou(empty, some).shape == (0, 1)
    assert box_iou(some, empty).shape == (1, 0)
    assert box_area(empty).shape == (0,)
    assert remove_small_boxes(empty, 1.0).shape == (0,)
    assert clip_boxes_to_image(empty, (5, 5)).shape == (0, 4)


def test_clip_and_remove_small_equal_torchvision():
    g = torch.Generator().manual_seed(5)
    boxes = random_boxes(50, g, spread=120.0) - 10
    assert torch.equal(clip_boxes_to_image(boxes, (90, 100)), torchvision_ops.clip_boxes_to_image(boxes, (90, 100)))
    assert torch.equal(remove_small_boxes(boxes, 12.5), torchvision_ops.remove_small_boxes(boxes, 12.5))


@pytest.mark.parametrize("bad, error, words", [
    ([[0.0, 0.0, 1.0, 1.0]], TypeError, "torch.Tensor"),
    (torch.zeros(3, 5), ValueError, "N, 4]"),
    (torch.zeros(4), ValueError, "N, 4]"),
    (torch.tensor([[0.0, 0.0, float("nan"), 1.0]]), ValueError, "finite"),
    (torch.tensor([[0.0, 0.0, float("inf"), 1.0]]), ValueError, "finite"),
    (torch.tensor([[5.0, 0.0, 1.0, 1.0]]), ValueError, "x1 <= x2"),
    (torch.tensor([[0.0, 5.0, 1.0, 1.0]]), ValueError, "y1 <= y2"),
    (torch.zeros(2, 4, dtype=torch.bool), TypeError, "dtype"),
])
def test_bad_boxes_are_rejected_with_a_clear_message(bad, error, words):
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    for call in (lambda: box_iou(bad, good), lambda: box_iou(good, bad), lambda: box_area(bad),
                 lambda: check_boxes(bad)):
        with pytest.raises(error) as info:
            call()
        assert words in str(info.value)


def test_error_names_the_offending_row():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match=r"row 2 is \[3.0, 0.0, 1.0, 1.0\]"):
        box_iou(boxes, boxes)


def test_bad_arguments():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="fmt"):
        box_iou(boxes, boxes, fmt="yxyx")
    with pytest.raises(ValueError, match="in_fmt"):
        box_convert(boxes, "corners", "xyxy")
    with pytest.raises(TypeError, match="height, width"):
        clip_boxes_to_image(boxes, 5)
    with pytest.raises(ValueError, match="positive"):
        clip_boxes_to_image(boxes, (0, 5))
    with pytest.raises(TypeError, match="min_size"):
        remove_small_boxes(boxes, "1")
    with pytest.raises(ValueError, match="width and height"):
        box_iou(torch.tensor([[0.0, 0.0, -1.0, 1.0]]), boxes, fmt="xywh")
