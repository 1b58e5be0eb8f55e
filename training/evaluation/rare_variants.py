"""Training layer (analysis): are large variant effects enriched among rare variants? (the paper's gnomAD test)

Why: purifying selection keeps variants that disturb regulation rare, so if f_bio captures biology, large
|biological effect| should be over-represented among rare variants, and less so (or not) for the technical part.
Per part: call a variant *rare* when its allele frequency is below `rare_below`, *large* when its |effect| is in
the top `1 − large_quantile` of all scored variants, and test the 2 × 2 table with Fisher's exact test
(one-sided, greater: rare variants more often large). scipy comes with scikit-learn.

Inputs are arrays (AF and effects per variant); reading them from the VCF that `python -m service.batch variants`
writes is not built yet (see docs/analyses.md).
"""
from __future__ import annotations

import numpy as np


def enrichment(af: np.ndarray, effect: np.ndarray, *, rare_below: float = 0.01,
               large_quantile: float = 0.9) -> dict[str, float | int]:
    """Odds ratio and one-sided Fisher p-value of large |effect| among rare vs common variants."""
    from scipy.stats import fisher_exact

    af, size = np.asarray(af, dtype=np.float64), np.abs(np.asarray(effect, dtype=np.float64))
    if af.shape != size.shape or af.ndim != 1:
        raise ValueError("af and effect: need one value per variant, same length")
    if not np.all((af >= 0) & (af <= 1)):
        raise ValueError("af: allele frequencies must lie in [0, 1]")
    rare, large = af < rare_below, size > np.quantile(size, large_quantile)
    table = [[int(np.sum(rare & large)), int(np.sum(rare & ~large))],
             [int(np.sum(~rare & large)), int(np.sum(~rare & ~large))]]
    odds, p = fisher_exact(table, alternative="greater")
    return {"odds_ratio": float(odds), "p_value": float(p), "rare_large": table[0][0], "rare_small": table[0][1],
            "common_large": table[1][0], "common_small": table[1][1]}


def rare_variant_table(af: np.ndarray, effects: dict[str, np.ndarray], **kwargs) -> list[dict[str, float | int | str]]:
    """One `enrichment` row per named effect (e.g. `bio`, `tech`, `total`)."""
    return [{"effect": name, **enrichment(af, values, **kwargs)} for name, values in effects.items()]
