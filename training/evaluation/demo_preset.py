"""Training layer (evaluation): the CI preset for the demo claims (data flavour + training overrides), shared by the
test fixture, the seed sweep and `make test-paper`.

**Data** (`DEMO_CI_DATA`, a flavour of `training.data.demo_genome`; the bundled model's genome is the default
flavour and is unchanged). Why each departure (docs/reproducibility.md has the measurements):

* `copies` 3 (three motif instances per site, was a pair) and `motif_bin_rate` 0.12 (was 0.08): on the default data
  the C=30 trunk finds GATA1 and HNF4A at seed-dependent epochs or not at all, so the mean AUROC over 14 tracks moved
  in steps of ~0.05 and the AUROC gap between two models was a coin flip on which had found which motif by the
  budget (0.003-0.080 over five seeds at 20 epochs). With stronger, denser sites both models find all five motifs
  by epoch ~10 on every seed measured;
* `gc_neutral`: planting an AT-rich motif (GATA1, SPI1) lowered its bin's GC and a GC-rich one (CTCF) raised it,
  which tied the biology to the GC artefact by construction (corr -0.16 / +0.28 at three copies). MFD's penalty
  then had to pull apart two signals the generator had tied, which cost it AUROC on the GATA1 tracks (gap
  0.015-0.023) and pushed its bio~GC below zero (-0.16) instead of to zero. With each site's bin kept at its GC,
  biology and artefact are independent, the setting the paper's claims are about.

**Training** (`DEMO_CI_OVERRIDES`): the reference recipe (the config defaults: Adam with amsgrad at lr 1e-3,
covariance penalty at coeff 0.01, best val/loss kept) at the paper's C=30, cut to a CI budget. Both models of the
demo pair get exactly these overrides; the baseline then changes only its head and drops the penalty.

* `train.init_output_bias`: per-track biases start at the logit of their base rate, for both models alike (from
  zero, Adam at lr 1e-3 spends ~1/lr steps on base rates, most of a CPU budget);
* `train.batch_size` 32: the flavour has 4.3k training windows; 135 steps an epoch instead of 68;
* `penalty.warmup_steps` 2400 (~18 epochs, longer than the run): the covariance norm of a 32-window batch has a
  noise floor (≈ 30/√32 ≈ 5 for 30×30 independent features). At full strength from step 0 MFD never found HNF4A on
  the default data; on this flavour, seed 0 at 15 epochs gave AUROC gap 0.016 / 0.008 / 0.002 and bio~GC share
  0.114 / 0.216 / 0.096 ramped over 900 / 1600 / 2400 steps. Those differences are of the size another seed makes:
  a control with the penalty off lags the baseline as much on seeds 3 and 4, so what MFD's learning curve waits
  for is its head, not the penalty (docs/reproducibility.md, point 4). The ramp is a penalty setting, so the models
  still differ only in head and penalty;
* `train.epochs` 15: the baseline's validation AUROC is flat from epoch ~12 on every seed measured.
"""
from __future__ import annotations

from ..data.demo_genome import DEFAULT_CHROMOSOMES, DemoSpec

# The claims flavour of the demo data (the bundled model's genome is the default flavour, unchanged):
DEMO_CI_DATA: dict[str, object] = {"motif_bin_rate": 0.12, "copies": 3, "gc_neutral": True}


def claims_spec(seed: int = 0) -> DemoSpec:
    """The demo data the claims are measured on: `DEMO_CI_DATA` over the default chromosomes."""
    return DemoSpec(dict(DEFAULT_CHROMOSOMES), seed=seed, **DEMO_CI_DATA)  # type: ignore[arg-type]


DEMO_CI_OVERRIDES: dict[str, object] = {
    "model.channels": 30,
    "train.threads": 1,
    "train.epochs": 15,
    "train.batch_size": 32,
    "train.init_output_bias": True,
    "penalty.warmup_steps": 2400,
}

# `make test-paper`: the same preset run to convergence (tests marked `paper`); val AUROC is flat from epoch ~12
PAPER_EPOCHS = 40
