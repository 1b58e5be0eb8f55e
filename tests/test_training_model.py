"""Model shapes, the independence penalties, metadata dropout and the numpy metrics."""
import math

import numpy as np
import pytest
import torch

from tests.fixtures.models import TINY_TRACKS, tiny_codec
from training.metrics import auprc, auroc, independence_metrics, linear_cka
from training.model import MFDModel, ModelConfig
from training.penalty import AdversarialPenalty, cross_covariance_penalty
from training.train import metadata_dropout


@pytest.mark.parametrize("head_kind, order", [("mfd", 2), ("mfd", 1), ("baseline", 2)])
def test_forward_shapes(head_kind, order):
    torch.manual_seed(0)
    codec = tiny_codec()
    model = MFDModel(ModelConfig(channels=16, onehot_order=order, head_kind=head_kind), codec, len(TINY_TRACKS))
    codes = torch.tensor(codec.encode_many([{k: v for k, v in t.items() if k != "id"} for t in TINY_TRACKS]))
    out = model(torch.randint(0, 5, (6, 2176), dtype=torch.uint8), codes)
    assert out["features"].shape == (6, 32)
    for key in ("logits", "logits_bio", "logits_tech"):
        assert out[key].shape == (6, len(TINY_TRACKS)) and torch.isfinite(out[key]).all()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], torch.zeros(6, 4))
    loss.backward()
    assert model.trunk.stem[0].weight.grad.abs().sum() > 0


def test_covariance_penalty_values_and_gradient_descent_reduces_it():
    torch.manual_seed(0)
    n = 256
    base = torch.randn(n, 8)
    independent = cross_covariance_penalty(base, torch.randn(n, 8))
    dependent = cross_covariance_penalty(base, base @ torch.randn(8, 8) + 0.1 * torch.randn(n, 8))
    assert independent < 0.1 < 0.3 < dependent
    assert cross_covariance_penalty(base, base).item() == pytest.approx(math.sqrt(1 / 8), abs=0.05)  # identity corr
    # a linear encoder whose two halves start out sharing inputs learns to decorrelate them
    x = torch.randn(n, 16)
    encoder = torch.nn.Linear(16, 16)
    with torch.no_grad():
        encoder.weight[8:] = encoder.weight[:8] + 0.1 * torch.randn(8, 16)
    opt = torch.optim.Adam(encoder.parameters(), lr=0.01)
    def penalty():
        f = encoder(x)
        return cross_covariance_penalty(f[:, 8:], f[:, :8])
    before = penalty().item()
    for _ in range(200):
        opt.zero_grad()
        loss = penalty()
        loss.backward()
        opt.step()
    after = penalty().item()
    assert before > 0.3 and after < before / 3, (before, after)
    with pytest.raises(ValueError, match="at least 2"):
        cross_covariance_penalty(torch.randn(1, 3), torch.randn(1, 3))


def test_adversarial_discriminator_detects_dependence_and_penalty_has_gradient():
    torch.manual_seed(0)
    n = 256
    f_bio = torch.randn(n, 4)
    dependent_tech = torch.tanh(2 * f_bio[:, :2]) + 0.05 * torch.randn(n, 2)  # non-linear dependence
    adversary = AdversarialPenalty(4, 2, hidden=32, lr=3e-3)
    first = adversary.discriminator_step(f_bio, dependent_tech)
    for _ in range(300):
        last = adversary.discriminator_step(f_bio, dependent_tech)
    assert first == pytest.approx(math.log(2), abs=0.1) and last < 0.45, (first, last)
    # penalty: log 2 - loss, so large when dependence is detectable; gradients reach features, not the discriminator
    features = dependent_tech.clone().requires_grad_(True)
    penalty = adversary(f_bio, features)
    assert penalty.item() > 0.2
    penalty.backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    grads_before = [None if p.grad is None else p.grad.clone() for p in adversary.disc.parameters()]
    adversary(f_bio, features).backward()
    for before, p in zip(grads_before, adversary.disc.parameters()):
        assert (before is None and p.grad is None) or torch.equal(before, p.grad)
    # independent pairs stay near chance
    fresh = AdversarialPenalty(4, 2, hidden=32, lr=3e-3)
    independent_tech = torch.randn(n, 2)
    for _ in range(100):
        loss = fresh.discriminator_step(f_bio, independent_tech)
    assert loss > 0.6


def test_metadata_dropout_zeroes_whole_variables():
    torch.manual_seed(0)
    codec = tiny_codec()
    codes = torch.tensor(codec.encode_many([{k: v for k, v in t.items() if k != "id"} for t in TINY_TRACKS]))
    masks = torch.tensor(np.stack([codec.variable_mask(v.name) for v in codec.variables]), dtype=torch.float32)
    assert torch.equal(metadata_dropout(codes, masks, 0.0), codes)
    dropped_any = False
    for _ in range(20):
        out = metadata_dropout(codes, masks, 0.5)
        for k in range(codes.shape[0]):
            for v, variable in enumerate(codec.variables):
                start, end = codec.offsets[variable.name]
                piece = out[k, start:end]
                assert torch.equal(piece, codes[k, start:end]) or torch.all(piece == 0)
                dropped_any |= bool(torch.all(piece == 0) and codes[k, start:end].abs().sum() > 0)
    assert dropped_any


def test_auroc_auprc_match_brute_force_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.2
    scores = np.round(rng.random(300) + labels * 0.3, 1)  # coarse scores → many ties
    pos, neg = scores[labels], scores[~labels]
    brute_auc = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert auroc(labels, scores) == pytest.approx(brute_auc, abs=1e-12)
    # average precision by definition: over distinct thresholds t (descending), (R(t) - R(prev)) * P(t)
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        called = scores >= t
        tp = (called & labels).sum()
        recall, precision = tp / labels.sum(), tp / called.sum()
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    assert auprc(labels, scores) == pytest.approx(ap, abs=1e-12)
    assert auroc(labels, labels.astype(float)) == 1.0 and auprc(labels, labels.astype(float)) == 1.0
    assert math.isnan(auroc(np.zeros(5), np.arange(5)))


def test_independence_metrics():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    independent = independence_metrics(a, rng.normal(size=(500, 5)))
    dependent = independence_metrics(a, a[:, :5] + 0.1 * rng.normal(size=(500, 5)))
    assert independent["mean_abs_corr"] < 0.06 and independent["linear_cka"] < 0.05
    assert dependent["max_abs_corr"] > 0.95 and dependent["linear_cka"] > 0.5
    assert linear_cka(a, a) == pytest.approx(1.0)
