"""mfd.plots rendered to PNG and checked as images: size, not blank, ink where each panel should have some.

The attribution maps are a real in-silico mutagenesis of the tiny test model (TorchScript, in-process) over a
short stretch; the variant effects come from the real service (`mfd_service`), as JSON and through mfd.Client.
"""
from __future__ import annotations

import io

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.image  # noqa: E402

from mfd import plots  # noqa: E402
from tests.fixtures.service import random_sequences  # noqa: E402


def image(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]  # RGB in [0, 1]


def ism_maps(reference, sequence: str, condition: str, start: int, end: int) -> dict[str, np.ndarray]:
    """map[p][b] = part(sequence with base b at p) − part(sequence): 0 at the sequence's own base."""
    mutants, where = [sequence], []
    for p in range(start, end):
        for b, base in enumerate("ACGT"):
            if base != sequence[p]:
                mutants.append(sequence[:p] + base + sequence[p + 1:])
                where.append((p - start, b))
    scores = reference.scores(mutants, [condition])
    maps = {}
    for part in ("logit", "logit_bio", "logit_tech"):
        values = scores[part][:, 0]
        m = np.zeros((end - start, 4))
        for (p, b), v in zip(where, values[1:]):
            m[p, b] = v - values[0]
        maps[part] = m
    return maps


@pytest.fixture(scope="module")
def maps(torchscript_reference):
    sequence = random_sequences(1, seed=11)[0]
    return sequence[1000:1024], ism_maps(torchscript_reference, sequence, "ENCFF002", 1000, 1024)


def test_attribution_logos_render_three_inked_rows(maps):
    window, m = maps
    assert np.abs(m["logit_bio"]).max() > 0 and np.abs(m["logit_tech"]).max() > 0
    np.testing.assert_allclose(m["logit"], m["logit_bio"] + m["logit_tech"], atol=1e-4)  # ISM of a sum
    fig = plots.attribution_logos(m["logit"], m["logit_bio"], m["logit_tech"], center=True, start=1000,
                                  title="ENCFF002, ISM")
    width, height = (fig.get_size_inches() * 100).round().astype(int)
    pixels = image(plots.to_png(fig, dpi=100))
    assert pixels.shape[:2] == (height, width) and width >= 500
    assert pixels.std() > 0.05  # not a blank canvas
    # each of the three rows holds letters: coloured (non-grey) pixels in every third of the height
    colour = pixels.max(axis=2) - pixels.min(axis=2) > 0.3
    thirds = np.array_split(colour, 3, axis=0)
    assert all(t.mean() > 0.005 for t in thirds), [t.mean() for t in thirds]
    # with the sequence given, only the observed bases are drawn: fewer letters, still a picture
    observed = image(plots.to_png(plots.attribution_logos(m["logit"], m["logit_bio"], m["logit_tech"],
                                                          sequence=window, center=True), dpi=100))
    assert 0.001 < (observed.max(axis=2) - observed.min(axis=2) > 0.3).mean() < colour.mean()


def test_attribution_logos_refuse_bad_maps(maps):
    _, m = maps
    with pytest.raises(ValueError, match=r"shape \[L\]\[4\]"):
        plots.attribution_logos(m["logit"][:, :3], m["logit_bio"], m["logit_tech"])
    with pytest.raises(ValueError, match="different lengths"):
        plots.attribution_logos(m["logit"][:-1], m["logit_bio"], m["logit_tech"])
    bad = m["logit_tech"].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="tech: the map holds NaN"):
        plots.attribution_logos(m["logit"], m["logit_bio"], bad)


@pytest.mark.slow
def test_variant_effects_from_the_service_json_and_the_client_frame(mfd_service, service_genome):
    import httpx

    import mfd

    chrom = service_genome.sequences["chr1"]
    variants = [{"chrom": "chr1", "pos": p, "ref": chrom[p - 1], "alt": "A" if chrom[p - 1] != "A" else "G",
                 "id": f"v{p}"} for p in (12000, 15001)]
    conditions = ["ENCFF001", "ENCFF002", "ENCFF003", {"biosample": "HepG2", "lab": "lab-C"}]
    body = {"variants": variants, "conditions": conditions,
            "ensemble": {"shifts": 1, "strands": 1, "geometry": "centred"}}
    response = httpx.post(mfd_service.http_url + "/predict_variants", json=body, timeout=60).json()
    from_json = image(plots.to_png(plots.variant_effects(response, "v15001"), dpi=100))
    with mfd.Client(mfd_service.http_url) as client:
        df = client.predict_variants(variants, conditions=conditions, ensemble=body["ensemble"])
    from_frame = image(plots.to_png(plots.variant_effects(df, "v15001"), dpi=100))
    assert from_json.shape == from_frame.shape and from_json.shape[1] == 1000
    np.testing.assert_array_equal(from_json, from_frame)  # the same numbers give the same picture
    assert from_json.std() > 0.05
    # bars in both colours of the split (green = biological, red = technical) and the ALT blue
    red, green, blue = (from_json[..., i] for i in range(3))
    assert ((green > 0.35) & (red < 0.25) & (blue < 0.35)).sum() > 50   # BIO_COLOR #1b7837
    assert ((red > 0.55) & (green < 0.2)).sum() > 50                    # TECH_COLOR #b2182b
    other = image(plots.to_png(plots.variant_effects(response, "v12000"), dpi=100))
    assert other.shape != from_json.shape or np.abs(other - from_json).mean() > 1e-3  # another variant, another picture
    with pytest.raises(ValueError, match="not in the response"):
        plots.variant_effects(response, "nope")
