"""Show-Attend-Tell captioning (dlmi.seq.captioning): shapes, attention maps, overfitting a tiny batch."""
import torch

from dlmi.seq.captioning import CaptioningModel, ConvEncoder


def _tiny_batch():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 32, 32, generator=g)
    # <bos>=1 ... <eos>=2, pad 0; different captions per image
    tokens = torch.tensor([[1, 4, 5, 6, 2, 0], [1, 7, 8, 2, 0, 0], [1, 4, 9, 6, 10, 2], [1, 11, 5, 2, 0, 0]])
    return images, tokens


def test_shapes_and_attention_sums_to_one():
    torch.manual_seed(0)
    images, tokens = _tiny_batch()
    feats, hw = ConvEncoder(1, (8, 16, 16))(images)
    assert hw == (4, 4) and feats.shape == (4, 16, 16)
    model = CaptioningModel(12, embed_dim=16, hidden_dim=32, attention_dim=16, channels=(8, 16, 16), num_tags=3)
    logits, alphas = model.teacher_forced(images, tokens)
    assert logits.shape == (4, 5, 12) and alphas.shape == (4, 5, 16)
    assert torch.allclose(alphas.sum(-1), torch.ones(4, 5), atol=1e-5)
    losses = model(images, tokens, tags=torch.zeros(4, 3))
    assert set(losses) == {"loss_words", "loss_attention", "loss_tags"}


def test_overfits_a_tiny_batch_greedy_and_beam():
    torch.manual_seed(0)
    images, tokens = _tiny_batch()
    model = CaptioningModel(12, embed_dim=16, hidden_dim=48, attention_dim=16, channels=(8, 16, 16), dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        loss = sum(model(images, tokens).values())
        loss.backward()
        opt.step()
    model.eval()
    expected = [[t for t in row[1:] if t not in (0, 2)] for row in tokens.tolist()]
    ids, att = model.generate(images, max_len=8)
    assert ids == expected
    assert att[0].shape == (len(ids[0]) + 1, 4, 4)
    beam_ids, beam_att = model.generate(images, max_len=8, beam_size=3)
    assert beam_ids == expected and beam_att[1].shape[1:] == (4, 4)
