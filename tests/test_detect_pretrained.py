"""The shipped checkpoints of the unit 10 / 11 detectors: each loads into the model that
:func:`dlmi.detect.pretrained.build` makes today (a changed architecture or config would break
the lectures), and the trained models detect lesions on held-out images (numbers from
:func:`mean_average_precision`, which matches pycocotools)."""
import pytest
import torch

from dlmi.detect import mean_average_precision
from dlmi.detect.pretrained import CHECKPOINTS, MODELS, build, lesion_data, load_pretrained

# mAP@0.5 on the first 30 test images, well below what each checkpoint measures (see the unit 10 and
# 11 lectures), far above an untrained model's ~0.
FLOORS = {"fast_rcnn": 0.08, "faster_rcnn": 0.15, "torchvision": 0.15, "yolo": 0.15}


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_matches_the_builder(name):
    path = CHECKPOINTS / f"{name}.pt"
    assert path.exists(), f"{path} is not shipped: python -m dlmi.detect.pretrained --only {name}"
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build(name)
    assert set(state) == set(model.state_dict())
    assert all(state[k].shape == v.shape for k, v in model.state_dict().items())
    assert not load_pretrained(name).training


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_trained_detectors_find_lesions(name):
    test = lesion_data("test")
    model = load_pretrained(name)
    untrained = build(name).eval()
    images, targets = [test[i][0] for i in range(30)], [test[i][1] for i in range(30)]
    with torch.no_grad():
        trained = mean_average_precision([model([im])[0] for im in images], targets)["map_50"]
        chance = mean_average_precision([untrained([im])[0] for im in images], targets)["map_50"]
    assert trained >= FLOORS[name] > chance


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="must be one of"):
        build("ssd")
