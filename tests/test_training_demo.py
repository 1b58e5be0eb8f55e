"""On the demo data with planted truth, MFD predicts as well as the plain-head baseline (the paper's claim) and its
biological read-out is free of the planted GC bias, which its technical read-out takes instead.

Both models are trained by `tests/fixtures/demo.py` with the CI preset (`training.evaluation.demo_preset`: the reference
recipe at C=30 with per-track output biases started at base rates, for both alike); they differ only in the head
(and with it the penalty). The claims and their margins are computed by `training.evaluation.demo_claims`, the same code the
seed sweep (`python -m bench.demo_claims_sweep`) runs; the measured distribution is in docs/reproducibility.md.

Measured (`python -m bench.demo_claims_sweep`, one thread, seeds 0-4 at 20 epochs; min / median / max):
    auroc_gap (baseline - MFD)   0.003 / 0.048 / 0.080
    MFD bio~GC                  -0.333 / 0.006 / 0.039      baseline bio~GC  0.133 / 0.262 / 0.354
    bio~GC share (MFD/baseline) -1.03  / 0.026 / 0.291
    MFD tech~GC - bio~GC         0.579 / 0.646 / 1.084      MFD tech~GC      0.571 / 0.666 / 0.751
    MFD test AUROC               0.752 / 0.879 / 0.920
Two threads, seed 0: gap 0.015, MFD bio~GC -0.028, tech~GC 0.622, tech - bio 0.649 (docs/reproducibility.md).
The paper's AUROC tolerance (0.02) and the 1/3 share are not met on every seed at this budget: CI asserts bounds
set below the worst seed with room, and `make test-paper` the claims themselves.
"""
import pytest

from training.evaluation.demo_claims import claims, gc_readouts

# Training both models takes a few minutes on 2 cores (the session fixture runs inside the first test).
pytestmark = pytest.mark.timeout(2400)

AUROC_TOLERANCE = 0.02      # the paper's claim: MFD test AUROC >= baseline - 0.02 (converged: `make test-paper`)
CI_AUROC_TOLERANCE = 0.2    # at the CI budget: a bound on the worst measured gap (0.080) with room, not the claim
GC_SHARE = 1 / 3            # the claim: MFD bio~GC <= 1/3 of the baseline's
TECH_OVER_BIO = 0.15        # the claim: MFD tech~GC > bio~GC + 0.15
BIO_GC_CEILING = 0.15       # at the CI budget: a ceiling on MFD's signed bio~GC (measured <= 0.039), not the 1/3 share
TECH_GC_FLOOR = 0.3         # the artefact is really there: MFD's technical read-out follows GC (measured >= 0.57)


@pytest.fixture(scope="module")
def readouts(demo_models, demo_data_dir):
    result = gc_readouts(demo_models, demo_data_dir)
    print(claims(result))
    return result


@pytest.mark.slow
def test_both_models_learn_the_planted_biology(readouts):
    for name in ("mfd", "baseline"):
        history = readouts[name]["history"]
        assert history[-1]["train"]["task"] < 0.85 * history[0]["train"]["task"], name  # loss decreases
        test = readouts[name]["card"].metrics["test"]
        assert test["auroc_mean"] > 0.65, (name, test["auroc_mean"])   # measured >= 0.75


@pytest.mark.slow
def test_mfd_auroc_is_near_the_baseline_at_the_ci_budget(readouts):
    """Not the paper's 0.02 at this budget: the gap depends on which motifs each model has found by epoch 20
    (0.009 / 0.053 / 0.080 / 0.048 / 0.003 on seeds 0-4); see docs/reproducibility.md."""
    c = claims(readouts)
    assert c["auroc_mfd"] >= c["auroc_baseline"] - CI_AUROC_TOLERANCE, c


@pytest.mark.slow
def test_mfd_biological_logits_are_free_of_the_planted_gc_bias(readouts):
    """At the CI budget the 1/3 share is not robust (0.29 on seed 2, where the baseline's own bio~GC fell to 0.13),
    so CI asserts MFD's bio~GC absolutely and below the baseline's; the share is asserted by `make test-paper`."""
    c = claims(readouts)
    # the artefact is really there, and MFD's technical read-out carries it …
    assert c["tech_gc_mfd"] > TECH_GC_FLOOR, c
    assert c["tech_gc_mfd"] > c["bio_gc_mfd"] + TECH_OVER_BIO, c
    # … while its biological read-out does not (signed: GATA1's motif is AT-rich, so a read-out free of the
    # artefact correlates *negatively* with GC)
    assert c["bio_gc_mfd"] <= BIO_GC_CEILING, c
    assert c["bio_gc_mfd"] < c["bio_gc_baseline"], c


@pytest.mark.paper
def test_paper_claims_on_the_converged_demo_run(paper_demo_models, demo_data_dir):
    """The same claims after PAPER_EPOCHS epochs (`make test-paper`), at the paper's tolerance."""
    c = claims(gc_readouts(paper_demo_models, demo_data_dir))
    assert c["auroc_mfd"] >= c["auroc_baseline"] - AUROC_TOLERANCE, c
    assert c["bio_gc_mfd"] <= GC_SHARE * c["bio_gc_baseline"], c
    assert c["tech_gc_mfd"] > c["bio_gc_mfd"] + TECH_OVER_BIO, c


@pytest.mark.slow
def test_penalty_reduces_bio_tech_cross_correlation(readouts):
    # same trunk and schedule; only MFD is penalised, so its latent halves are far less correlated
    mfd = readouts["mfd"]["card"].metrics["val"]["independence"]
    baseline = readouts["baseline"]["card"].metrics["val"]["independence"]
    assert mfd["mean_abs_corr"] < 0.5 * baseline["mean_abs_corr"], (mfd, baseline)
