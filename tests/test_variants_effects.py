"""service.core.effects: crops and averaging by brute force, and the engine's ensembled effects against every crop
scored independently through the TorchScript files (the paper's 7 shifts x 2 strands)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mfd_common import tokens
from service.core.effects import EnsembleSpec, crops, mean_scores
from service.core.engine import Engine
from service.api.json_api import JsonApi
from service.api.schemas import VariantRequest
from service.core.scoring import Scores
from service.settings import Settings
from tests.fixtures.service import write_genome
from tests.fixtures.variant_effects import expected_effect


def test_crops_are_every_offset_on_both_strands():
    rng = np.random.default_rng(0)
    seq_len, spec = 11, EnsembleSpec(shifts=4, strands=2, geometry="centred")
    long = rng.integers(0, 5, size=(3, spec.read_length(seq_len)), dtype=np.uint8)
    out = crops(long, seq_len, spec)
    assert out.shape == (3 * 8, seq_len)
    for n in range(3):
        for i in range(4):
            forward = long[n, i:i + seq_len]
            np.testing.assert_array_equal(out[n * 8 + 2 * i], forward)
            np.testing.assert_array_equal(out[n * 8 + 2 * i + 1], tokens.reverse_complement(forward))
    np.testing.assert_array_equal(crops(long, seq_len, EnsembleSpec(4, 1, "centred"))[5], long[1, 1:1 + seq_len])
    with pytest.raises(ValueError, match="expected"):
        crops(long[:, 1:], seq_len, spec)


def test_mean_scores_average_probabilities_not_their_logits():
    logits = np.array([[0.0], [4.0], [-2.0], [2.0]], dtype=np.float32)  # two windows x two crops
    s = Scores(1 / (1 + np.exp(-logits)), logits, logits * 0.5, logits * 0.5, np.zeros(1, np.float32))
    m = mean_scores(s, EnsembleSpec(shifts=2, strands=1))
    np.testing.assert_allclose(m.logit[:, 0], [2.0, 0.0])
    np.testing.assert_allclose(m.probability[:, 0], [(0.5 + 1 / (1 + np.exp(-4))) / 2,
                                                     (1 / (1 + np.exp(2)) + 1 / (1 + np.exp(-2))) / 2], rtol=1e-6)
    assert m.probability[1, 0] == pytest.approx(0.5) and m.probability[0, 0] != pytest.approx(1 / (1 + np.exp(-2)))
    with pytest.raises(ValueError, match="shifts"):
        EnsembleSpec(shifts=0)
    with pytest.raises(ValueError, match="strands"):
        EnsembleSpec(strands=3)


def test_engine_effects_equal_the_mean_of_independent_window_effects(exported_repository, torchscript_reference,
                                                                     tmp_path):
    genome = write_genome(tmp_path / "g.fa", {"chr7": 9000}, seed=3)
    chrom = genome.sequences["chr7"]
    conditions = ["ENCFF001", {"biosample": "HepG2", "target": "CTCF", "lab": "lab-A"}]
    variants = [  # named "7" in the request: the FASTA says chr7
        {"chrom": "7", "pos": 4500, "ref": chrom[4499], "alt": "A" if chrom[4499] != "A" else "G"},
        {"chrom": "chr7", "pos": 5000, "ref": chrom[4999:5006], "alt": chrom[4999]},
        {"chrom": "chr7", "pos": 5500, "ref": chrom[5499], "alt": chrom[5499] + "TTGACA"},
    ]

    async def run(ensemble):
        engine = Engine(Settings(model_repository=exported_repository, fasta=genome.path, torch_threads=1))
        await engine.start()
        try:
            api = JsonApi(engine)
            request = api.parse(VariantRequest, {"variants": variants, "conditions": conditions,
                                                 "ensemble": ensemble})
            return await api.predict_variants(request)
        finally:
            await engine.close()

    body = asyncio.run(run({}))  # the default: the paper's 7 x 2 in their geometry
    assert body["ensemble"] == {"shifts": 7, "strands": 2, "geometry": "reference"}
    assert body["reverse_complement"] is True
    for v, result in zip(variants, body["results"]):
        expected = expected_effect(torchscript_reference, chrom, v["pos"], v["ref"], v["alt"], conditions)
        for quantity, atol in (("probability", 2e-6), ("logit", 5e-5), ("logit_bio", 5e-5), ("logit_tech", 5e-5)):
            got = [e[f"delta_{quantity}"] for e in result["effects"]]
            np.testing.assert_allclose(got, expected[quantity], atol=atol, err_msg=f"{v} {quantity}")
        single = expected_effect(torchscript_reference, chrom, v["pos"], v["ref"], v["alt"], conditions,
                                 shifts=1, strands=1, geometry="centred")
        assert np.abs(np.array([e["delta_logit"] for e in result["effects"]]) - single["logit"]).max() > 1e-4
    for geometry in ("centred", "reference"):
        plain = asyncio.run(run({"shifts": 3, "strands": 1, "geometry": geometry}))
        expected = expected_effect(torchscript_reference, chrom, 4500, variants[0]["ref"], variants[0]["alt"],
                                   conditions, shifts=3, strands=1, geometry=geometry)
        np.testing.assert_allclose([e["delta_logit"] for e in plain["results"][0]["effects"]], expected["logit"],
                                   atol=5e-5, err_msg=geometry)
