"""On the demo data with planted truth, MFD predicts about as well as the plain-head baseline (the paper's claim) and
its biological read-out is free of the planted GC bias, which its technical read-out takes instead.

Both models are trained by `tests/fixtures/demo.py` with the CI preset (`training.evaluation.demo_preset`: the claims
flavour of the demo data, where motif sites are denser, stronger and GC-neutral, and the reference recipe at C=30 for
15 epochs with base-rate output biases for both and the covariance penalty ramped over the run); they differ only in
the head (and with it the penalty). The claims and their margins are computed by `training.evaluation.demo_claims`,
the same code the seed sweep (`python -m bench.demo_claims_sweep`) runs; docs/reproducibility.md has the tables.

Measured (`python -m bench.demo_claims_sweep --seeds 0 1 2 3 4 --threads 1 --budgets 15`; min / median / max):
    auroc_gap (baseline - MFD)   0.002 / 0.008 / 0.068     MFD test AUROC   0.882 / 0.923 / 0.944
    MFD bio~GC                  -0.106 / 0.025 / 0.114     baseline bio~GC  0.270 / 0.370 / 0.410
    bio~GC share (MFD/baseline) -0.345 / 0.063 / 0.422
    MFD tech~GC                  0.482 / 0.676 / 0.733     tech - bio       0.456 / 0.655 / 0.783
Two threads (--threads 2, seeds 0-4):
    auroc_gap                   -0.005 / 0.019 / 0.067     MFD test AUROC   0.880 / 0.931 / 0.952
    MFD bio~GC                  -0.091 / 0.026 / 0.198     bio~GC share    -0.196 / 0.065 / 0.579
    MFD tech~GC                  0.508 / 0.583 / 0.734     tech - bio       0.492 / 0.523 / 0.708
At this budget the paper's AUROC tolerance (0.02) holds on 6 runs of these 10 (worst: seed 4, 0.068) and the 1/3
share on 8 (worst: seed 2, 0.42 / 0.58): MFD's metadata-conditioned head finds GATA1 or HNF4A later than the
baseline on some seeds, with or without the penalty (a control with the penalty off lags as much; a learning rate
of 2e-3 for both only moves the lag to another seed). So CI asserts bounds set below the worst seed with room, and
`make test-paper` the claims themselves on a longer run. The GC-to-technical claim (tech - bio > 0.15) holds at the
paper's threshold with a wide margin.
"""
import pytest

from training.evaluation.demo_claims import claims, gc_readouts

# Training both models takes a few minutes on 2 cores (the session fixture runs inside the first test).
pytestmark = pytest.mark.timeout(2400)

AUROC_TOLERANCE = 0.02      # the paper's claim: MFD test AUROC >= baseline - 0.02 (converged: `make test-paper`)
CI_AUROC_TOLERANCE = 0.15   # at the CI budget: a bound on the worst measured gap (0.068, 10 runs) with room
GC_SHARE = 1 / 3            # the claim: MFD bio~GC <= 1/3 of the baseline's
CI_GC_SHARE = 0.75          # at the CI budget: |MFD bio~GC| <= 0.75 x the baseline's (worst measured 0.58)
BIO_GC_CEILING = 0.25       # at the CI budget: |MFD bio~GC| (worst measured 0.198); GC-neutral sites make 0 the ideal
TECH_OVER_BIO = 0.15        # the claim: MFD tech~GC > bio~GC + 0.15 (worst measured 0.456), asserted as is
TECH_GC_FLOOR = 0.25        # the artefact is really there: MFD's technical read-out follows GC (measured >= 0.48)


@pytest.fixture(scope="module")
def readouts(demo_models, claims_data_dir):
    result = gc_readouts(demo_models, claims_data_dir)
    print(claims(result))
    return result


@pytest.mark.slow
def test_both_models_learn_the_planted_biology(readouts):
    for name in ("mfd", "baseline"):
        history = readouts[name]["history"]
        assert history[-1]["train"]["task"] < 0.85 * history[0]["train"]["task"], name  # loss decreases
        test = readouts[name]["card"].metrics["test"]
        assert test["auroc_mean"] > 0.8, (name, test["auroc_mean"])   # measured >= 0.88


@pytest.mark.slow
def test_mfd_auroc_is_near_the_baseline_at_the_ci_budget(readouts):
    """Not the paper's 0.02 at this budget: the gap depends on whether MFD's head has found GATA1 and HNF4A by epoch
    15 (0.002 / 0.008 / 0.007 / 0.022 / 0.068 on seeds 0-4); see docs/reproducibility.md."""
    c = claims(readouts)
    assert c["auroc_mfd"] >= c["auroc_baseline"] - CI_AUROC_TOLERANCE, c


@pytest.mark.slow
def test_mfd_biological_logits_are_free_of_the_planted_gc_bias(readouts):
    """At the CI budget the 1/3 share is not robust (seed 2: 0.42, 0.58 at two threads), so CI asserts
    a looser share and an absolute ceiling on |MFD bio~GC|; the 1/3 share is asserted by `make test-paper`. The
    claims flavour plants GC-neutral sites, so a read-out free of the artefact has bio~GC near 0, of either sign."""
    c = claims(readouts)
    # the artefact is really there, and MFD's technical read-out carries it (the paper's margin, as is) …
    assert c["tech_gc_mfd"] > TECH_GC_FLOOR, c
    assert c["tech_gc_mfd"] > c["bio_gc_mfd"] + TECH_OVER_BIO, c
    # … while its biological read-out does not
    assert abs(c["bio_gc_mfd"]) <= BIO_GC_CEILING, c
    assert abs(c["bio_gc_mfd"]) <= CI_GC_SHARE * c["bio_gc_baseline"], c


@pytest.mark.paper
def test_paper_claims_on_the_converged_demo_run(paper_demo_models, claims_data_dir):
    """The same claims after PAPER_EPOCHS epochs (`make test-paper`), at the paper's tolerance."""
    c = claims(gc_readouts(paper_demo_models, claims_data_dir))
    assert c["auroc_mfd"] >= c["auroc_baseline"] - AUROC_TOLERANCE, c
    assert c["bio_gc_mfd"] <= GC_SHARE * c["bio_gc_baseline"], c
    assert c["tech_gc_mfd"] > c["bio_gc_mfd"] + TECH_OVER_BIO, c


@pytest.mark.slow
def test_penalty_reduces_bio_tech_cross_correlation(readouts):
    # same trunk and schedule; only MFD is penalised, so its latent halves are far less correlated (MFD / baseline
    # mean |corr| measured 0.105 / 0.382 / 0.180 / 0.202 / 0.121 on seeds 0-4, two threads at most 0.280: the ramp
    # ends after the run)
    mfd = readouts["mfd"]["card"].metrics["val"]["independence"]
    baseline = readouts["baseline"]["card"].metrics["val"]["independence"]
    assert mfd["mean_abs_corr"] < 0.7 * baseline["mean_abs_corr"], (mfd, baseline)
