"""The reference model (shapes, names, parameter count, one-hot, ConvBlock, logit formula, bias rule), the
authors' independence penalties checked by hand, metadata dropout and the numpy metrics."""
import math

import numpy as np
import pytest
import torch

from tests.fixtures.models import TINY_TRACKS, tiny_codec
from training.evaluation.metrics import auprc, auroc, independence_metrics, linear_cka
from training.model.network import MFDModel, ModelConfig, OneHot, condition_bias, trunk_parameter_count
from training.model.penalty import (IndependencePenalty, adversarial_batch, covariance_penalty, total_r2,
                              z_score)
from training.model.fit import metadata_dropout

ROWS = [{k: v for k, v in t.items() if k != "id"} for t in TINY_TRACKS]


def tiny_model(**cfg) -> MFDModel:
    codec = tiny_codec()
    return MFDModel(ModelConfig(channels=16, **cfg), codec, len(TINY_TRACKS), torch.tensor(codec.encode_many(ROWS)))


@pytest.mark.parametrize("head_kind, order, window", [("mfd", 2, 2177), ("mfd", 1, 2176), ("baseline", 2, 2177)])
def test_forward_shapes(head_kind, order, window):
    torch.manual_seed(0)
    model = tiny_model(seq_order=order, head_kind=head_kind)
    assert model.cfg.window_bases == window
    out = model(torch.randint(0, 5, (6, window), dtype=torch.uint8))
    assert out["features"].shape == (6, 32)
    for key in ("logits", "logits_bio", "logits_tech"):
        assert out[key].shape == (6, len(TINY_TRACKS)) and torch.isfinite(out[key]).all()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out["logits"], torch.zeros(6, 4))
    loss.backward()
    assert model.stem[0].weight.grad.abs().sum() > 0


def test_trunk_matches_the_reference_parameter_count_widths_and_names():
    codec = tiny_codec()
    big = MFDModel(ModelConfig(channels=768), codec, 4)
    assert trunk_parameter_count(big) == 17_844_957  # docs/reference-facts.md: the trunk at C=768
    assert sum(p.numel() for p in big.bn_features.parameters()) == 3072
    small = tiny_model().state_dict()
    c30 = MFDModel(ModelConfig(channels=30), codec, 4).state_dict()
    # widths 15→16→18→21→23→26→30 (int() of the geometric growth), the reference's key names and shapes
    assert [c30[f"tower.tower.{l}.0.conv1d_block.2.weight"].shape[0] for l in range(6)] == [16, 18, 21, 23, 26, 30]
    assert c30["stem.0.weight"].shape == (15, 16, 15) and "stem.0.bias" in c30
    assert c30["stem.1.conv1d_block.2.weight"].shape == (15, 15, 1) and "stem.1.conv1d_block.2.bias" not in c30
    assert c30["dilated_residual_block.dilatedresidualblock.1.conv1d_block_1.conv1d_block.2.weight"].shape == (30, 30, 3)
    assert c30["pointwise.conv1d_block.2.weight"].shape == (60, 30, 1)
    assert c30["bn_features.weight"].shape == (60,) and c30["bias"].shape == (4,)
    assert "metadata_embedding.embedding_biological.column_embeddings.target.embedding.weights" in small
    assert "metadata_embedding.embedding_biological.mapping_interact.4.weight" in small
    assert "metadata_embedding.embedding_technical.column_embeddings.assay.embedding.weights" in small
    dilations = [m.dilation[0] for m in MFDModel(ModelConfig(channels=30), codec, 4).dilated_residual_block.modules()
                 if isinstance(m, torch.nn.Conv1d) and m.kernel_size[0] == 3]
    assert dilations == [2, 3]  # int(2 * 1.5 ** l)


def test_dinucleotide_one_hot_matches_brute_force_and_the_n_rule():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 5, size=(3, 40)).astype(np.uint8)
    got = OneHot(2)(torch.from_numpy(tokens)).numpy()
    assert got.shape == (3, 16, 39)
    for n in range(3):
        for i in range(39):
            a, b = tokens[n, i], tokens[n, i + 1]
            want = np.zeros(16)
            if a < 4 and b < 4:
                want[a * 4 + b] = 1  # first base major: AA, AC, AG, AT, CA, …
            np.testing.assert_array_equal(got[n, :, i], want)


def test_conv_block_is_batchnorm_gelu_tanh_conv_without_bias():
    from training.model.network import ConvBlock
    torch.manual_seed(0)
    block = ConvBlock(3, 2, 3, residual=False).eval()
    bn, conv = block.conv1d_block[0], block.conv1d_block[2]
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    x = torch.randn(2, 3, 9)
    normed = (x - bn.running_mean[None, :, None]) / torch.sqrt(bn.running_var[None, :, None] + 1e-5)
    normed = normed * bn.weight[None, :, None] + bn.bias[None, :, None]
    act = 0.5 * normed * (1 + torch.tanh(math.sqrt(2 / math.pi) * (normed + 0.044715 * normed ** 3)))
    want = torch.nn.functional.conv1d(act, conv.weight, padding=1)
    torch.testing.assert_close(block(x), want, rtol=1e-5, atol=1e-5)


def test_logits_are_bio_plus_tech_plus_track_bias_and_never_measured_bias_rule():
    torch.manual_seed(0)
    model = tiny_model().eval()
    with torch.no_grad():
        model.bias.copy_(torch.tensor([1.0, -2.0, 3.0, 0.5]))
        out = model(torch.randint(0, 4, (5, 2177), dtype=torch.uint8))
        f = out["features"]
        w_tech, w_bio = model.metadata_embedding(model.track_codes)
    torch.testing.assert_close(out["logits"], f[:, 16:] @ w_bio.T + f[:, :16] @ w_tech.T + model.bias)
    codec = tiny_codec()
    conditions = [ROWS[2], dict(ROWS[0], lab="lab-C"), {"lab": "lab-B"}, dict(ROWS[0], release_year=2016)]
    codes = torch.tensor(codec.encode_many(conditions))
    bias = condition_bias(codes, model.track_codes, model.bias.detach(), model.variable_starts, model.variable_ends)
    # exact match → that track's bias; 6 of 7 categorical variables agree with track 1 only → its bias; lab-B
    # alone matches tracks 2 and 4 → their mean (the left-out `replicates` takes its mean code, 0, which equals the
    # code of tracks 1 and 3 — numbers do not count, or they would join); ENCFF001 with another year → track 1
    assert bias.tolist() == pytest.approx([3.0, 1.0, (-2.0 + 0.5) / 2, 1.0])


def test_covariance_penalty_is_the_reference_frobenius_norm_of_zscored_cross_covariance():
    torch.manual_seed(0)
    n = 64
    bio, tech = torch.randn(n, 3), torch.randn(n, 2)
    zb = (bio - bio.mean(0)) / bio.std(0, unbiased=True)
    zt = (tech - tech.mean(0)) / tech.std(0, unbiased=True)
    cov = zt.T @ zb / n
    assert covariance_penalty(bio, tech).item() == pytest.approx(float(torch.sqrt((cov ** 2).sum())), rel=1e-5)
    assert covariance_penalty(bio, tech, frobenius=False).item() == pytest.approx(float(cov.abs().sum()), rel=1e-5)
    constant = torch.ones(n, 2)
    assert torch.equal(z_score(constant), torch.zeros(n, 2))  # NaN → 0, as the reference's nan_to_num
    assert covariance_penalty(bio, constant).item() == 0.0
    # gradient descent on the penalty decorrelates two halves of a linear encoder
    x = torch.randn(256, 16)
    encoder = torch.nn.Linear(16, 16)
    with torch.no_grad():
        encoder.weight[8:] = encoder.weight[:8] + 0.1 * torch.randn(8, 16)
    opt = torch.optim.Adam(encoder.parameters(), lr=0.01)
    def penalty():
        f = encoder(x)
        return covariance_penalty(f[:, 8:], f[:, :8])
    before = penalty().item()
    for _ in range(200):
        opt.zero_grad()
        penalty().backward()
        opt.step()
    assert penalty().item() < before / 3


def test_total_r2_is_the_sum_of_squared_per_feature_correlations():
    torch.manual_seed(0)
    target = torch.randn(100, 3)
    prediction = torch.stack([target[:, 0], -target[:, 1], torch.randn(100)], dim=1)
    # the reference z-scores with the unbiased std and divides by N, so a perfect correlation counts (N-1)/N
    shrink = 99 / 100
    expected = 2 * shrink ** 2 + float((shrink * np.corrcoef(prediction[:, 2], target[:, 2])[0, 1]) ** 2)
    assert total_r2(prediction, target).item() == pytest.approx(expected, rel=1e-4)


def test_adversarial_batch_and_discriminator_detect_dependence():
    torch.manual_seed(0)
    n = 256
    f_bio = torch.randn(n, 4)
    dependent = torch.tanh(2 * f_bio[:, :4]) + 0.05 * torch.randn(n, 4)
    x, y = adversarial_batch(f_bio, dependent, torch.arange(n).flip(0))
    assert x.shape == (2 * n, 8) and y[:n].eq(1).all() and y[n:].eq(0).all()
    assert torch.equal(x[n:, 4:], dependent.flip(0))
    adversary = IndependencePenalty("adversarial", 4, 4, hidden=64, layers=2, lr=3e-3)
    assert len(adversary.discriminator) == 4  # Linear+LeakyReLU, 1 hidden block, Linear out
    first = adversary.adversary_step(f_bio, dependent)
    for _ in range(300):
        adversary.model_term(f_bio, dependent)
        last = adversary.adversary_step(f_bio, dependent)
    assert first == pytest.approx(math.log(2), abs=0.15) and last < 0.45, (first, last)
    # the model's term is BCE against flipped labels: high when the discriminator wins; gradients reach features
    features = dependent.clone().requires_grad_(True)
    term = adversary.model_term(f_bio, features)["adversarial"]
    assert term.item() > 1.0
    term.backward()
    assert features.grad.abs().sum() > 0


def test_predictor_penalty_uses_one_predictor_per_direction():
    torch.manual_seed(0)
    penalty = IndependencePenalty("covariance+predictor", d_bio=6, d_tech=2, hidden=32, layers=2)
    assert penalty.predictor_bio[0].in_features == 2 and penalty.predictor_bio[-1].out_features == 6
    assert penalty.predictor_tech[0].in_features == 6 and penalty.predictor_tech[-1].out_features == 2
    f_bio = torch.randn(128, 6)
    f_tech = f_bio[:, :2] * 2 + 0.01 * torch.randn(128, 2)
    terms = penalty.model_term(f_bio, f_tech)
    assert set(terms) == {"covariance", "r2"}
    before = terms["r2"].item()
    for _ in range(200):
        penalty.model_term(f_bio, f_tech)
        penalty.adversary_step(f_bio, f_tech)
    assert penalty.model_term(f_bio, f_tech)["r2"].item() > before + 0.5  # the predictors learned to predict


def test_metadata_dropout_zeroes_whole_variables():
    torch.manual_seed(0)
    codec = tiny_codec()
    codes = torch.tensor(codec.encode_many(ROWS))
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
