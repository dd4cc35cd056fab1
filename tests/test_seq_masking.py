"""dlmi.seq.masking: mask-aware pooling and the teacher-forced loss, against per-sequence references."""
import pytest
import torch
import torch.nn.functional as F

from dlmi.seq import (
    check_ids, check_lengths, last_step, lengths_to_mask, masked_cross_entropy, masked_max, masked_mean,
    masked_pool, sequence_log_prob, shift_targets,
)


def _padded(lengths, d=3, fill=1e4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), d, generator=g, dtype=torch.float64) - 5  # all negative
    for b, n in enumerate(lengths):
        x[b, n:] = fill
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("fill", [1e4, -1e4, float("nan")])
def test_pooling_equals_pooling_each_unpadded_sequence(fill):
    x, lengths = _padded([4, 1, 7, 3], fill=fill)
    mean, mx, last = masked_mean(x, lengths), masked_max(x, lengths), last_step(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(mean[b], x[b, :n].mean(0))
        assert torch.equal(mx[b], x[b, :n].amax(0))
        assert torch.equal(last[b], x[b, n - 1])
    assert torch.equal(masked_pool(x, lengths, "max"), mx)


def test_mask_and_gradients_stay_off_padding():
    x, lengths = _padded([2, 5], fill=0.0)
    assert lengths_to_mask(lengths).tolist() == [[1, 1, 0, 0, 0], [1] * 5]
    x.requires_grad_(True)
    (masked_mean(x, lengths).sum() + masked_max(x, lengths).sum()).backward()
    assert x.grad[0, 2:].abs().sum() == 0


def test_masked_cross_entropy_equals_a_hand_loop_and_torch():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([5, 2, 3])
    logits = torch.randn(3, 5, 7, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 7, (3, 5), generator=g)
    targets[1, 2:] = 99  # padding may hold anything, even out-of-vocabulary ids
    total, count, per_seq = 0.0, 0, []
    for b, n in enumerate(lengths.tolist()):
        s = sum(-torch.log_softmax(logits[b, t], -1)[targets[b, t]] for t in range(n))
        per_seq.append(s)
        total, count = total + s, count + n
    assert torch.allclose(masked_cross_entropy(logits, targets, lengths), total / count)
    assert torch.allclose(masked_cross_entropy(logits, targets, lengths, "none"), torch.stack(per_seq))
    assert torch.allclose(sequence_log_prob(logits, targets, lengths), -torch.stack(per_seq))
    flat = torch.cat([logits[b, :n] for b, n in enumerate(lengths.tolist())])
    flat_t = torch.cat([targets[b, :n] for b, n in enumerate(lengths.tolist())])
    assert torch.allclose(masked_cross_entropy(logits, targets, lengths, "sum"), F.cross_entropy(flat, flat_t, reduction="sum"))


def test_shift_targets():
    ids = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    inputs, targets, n = shift_targets(ids, torch.tensor([4, 3]))
    assert inputs.tolist() == [[1, 5, 6], [1, 7, 2]] and targets.tolist() == [[5, 6, 2], [7, 2, 0]]
    assert n.tolist() == [3, 2]
    with pytest.raises(ValueError, match="at least 2 tokens"):
        shift_targets(ids, torch.tensor([4, 1]))


def test_bad_lengths_and_ids():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="empty sequences"):
        masked_mean(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"shape \(batch,\) = \(2,\)"):
        masked_max(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="<= 3"):
        last_step(x, torch.tensor([4, 1]))
    with pytest.raises(TypeError, match="integers"):
        check_lengths(torch.tensor([1.0, 2.0]), 2)
    with pytest.raises(ValueError, match="mode"):
        masked_pool(x, torch.tensor([1, 2]), "median")
    with pytest.raises(ValueError, match="id 9, outside the vocabulary"):
        check_ids(torch.tensor([[1, 9]]), 5)
    check_ids(torch.tensor([[1, 9]]), 5, lengths=torch.tensor([1]))  # padding is not checked
    with pytest.raises(ValueError, match="outside the vocabulary"):
        masked_cross_entropy(torch.zeros(1, 2, 3), torch.tensor([[0, 5]]), torch.tensor([2]))
    with pytest.raises(TypeError, match="integer token ids"):
        check_ids(torch.zeros(1, 2), 5)
