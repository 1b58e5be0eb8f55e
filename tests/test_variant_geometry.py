"""Variant-effect crop geometry (service.core.effects, docs/variant-effects.md): the authors' gnomAD script by default.

1. By construction: a backend that records every window the engine asks it to score; the windows must be their
   crops, written here in their terms (a 2185-base window; crop i = window[i:i+2178]; reverse crop i =
   rc(window)[i:i+2178]), cut to the model's 2177 bases.
2. Parity: a checkpoint in the authors' format (tests/fixtures/reference_checkpoint.py) imported and served; the
   expected effects are computed in the test the way their script does, on one-hot dinucleotides: crops of 2177
   positions (one more than the trunk's 2176) through the eager model, reverse complement by channel permutation and
   flip of the whole window, probabilities and logits averaged over 7 shifts x 2 strands.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from mfd_common import tokens as dna
from service.backends import create_backend
from service.backends.base import Backend, HeadWeights
from service.batch.__main__ import build_parser
from service.batch.runtime import ensemble_from
from service.core.engine import Engine
from service.repository import load_repository
from service.api.json_api import JsonApi
from service.api.schemas import VariantRequest
from service.settings import Settings
from tests.fixtures.reference_checkpoint import ReferenceFixture, build_reference_checkpoint
from tests.fixtures.service import write_genome
from tests.fixtures.variant_effects import reverse_complement
from training.reference.importer import import_reference

SHIFT_LEN = 8  # their script's shift_len: the window is read 8 dinucleotide positions longer, crops at 0 … 6


class RecordingBackend(Backend):
    """The real embedded backend, keeping a copy of every token batch it is asked to score."""

    name = "recording"

    def __init__(self, inner: Backend):
        self.inner = inner
        self.windows: list[np.ndarray] = []

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def features(self, tokens: np.ndarray) -> np.ndarray:
        self.windows.extend(np.array(tokens, copy=True))
        return await self.inner.features(tokens)

    async def head(self, codes: np.ndarray) -> HeadWeights:
        return await self.inner.head(codes)


def run_variants(repository: Path, fasta: Path, *bodies: dict, record: bool = False):
    """/predict_variants bodies through one engine: [(response, windows the backend scored or None)]."""
    async def go():
        settings = Settings(model_repository=repository, fasta=fasta, torch_threads=1)
        backend = create_backend(settings, load_repository(repository, require_models=True))
        recorder = RecordingBackend(backend) if record else backend
        engine = Engine(settings, backend=recorder)
        await engine.start()
        try:
            out = []
            for body in bodies:
                if record:
                    recorder.windows = []  # drop the warm-up's and the previous body's windows
                result = await JsonApi(engine).predict_variants(JsonApi(engine).parse(VariantRequest, body))
                out.append((result, recorder.windows if record else None))
            return out
        finally:
            await engine.close()
    return asyncio.run(go())


def their_window(chromosome: str, pos: int, ref: str, alt: str, bin_size: int) -> tuple[str, str]:
    """Their VariantParser.get_variant_seq for an odd bin size: the variant's first base at bin_size // 2, the alt
    haplotype filled or cut on the right from the reference."""
    left, right = bin_size // 2, bin_size - bin_size // 2
    p = pos - 1
    d = min(len(alt) - len(ref), 0)
    full = chromosome[p - left:p + right - d]
    ref_seq = full[:left] + ref + full[left + len(ref):][:right - len(ref)]
    alt_seq = full[:left] + alt + full[left + len(ref):][:right - len(alt) - d]
    return ref_seq, alt_seq


# ---- 1. the geometry by construction ----------------------------------------------------------------------------
def test_the_engine_scores_exactly_their_crops(exported_repository, tmp_path):
    genome = write_genome(tmp_path / "g.fa", {"chr2": 9000}, seed=11)
    chrom = genome.sequences["chr2"]
    pos = 4321
    alt = "A" if chrom[pos - 1] != "A" else "C"
    seq_len = 2177
    body = {"variants": [{"chrom": "chr2", "pos": pos, "ref": chrom[pos - 1], "alt": alt}],
            "conditions": ["ENCFF001"]}
    (result, windows), (centred, centred_windows) = run_variants(
        exported_repository, genome.path, body, {**body, "ensemble": {"geometry": "centred"}}, record=True)
    assert result["ensemble"] == {"shifts": 7, "strands": 2, "geometry": "reference"}
    got = [dna.decode(w) for w in windows]

    bin_size = 2176 + SHIFT_LEN + 1                      # their seq_len + shift_len positions + 1 = 2185 bases
    expected = []
    for window in their_window(chrom, pos, chrom[pos - 1], alt, bin_size):
        assert len(window) == 2185
        rc = reverse_complement(window)
        for i in range(SHIFT_LEN - 1):                   # their s[:, :, i:-(shift_len - 1) + i]: 2177 positions
            for strand in (window, rc):
                crop = strand[i:len(strand) - (SHIFT_LEN - 1) + i]
                assert len(crop) == 2178
                expected.append(crop[:seq_len])          # the trunk never sees the 2178th base (test 2 shows it)
    assert got == expected
    # In forward coordinates the reverse crops start one position after the forward ones: offsets 1 … 7 vs 0 … 6
    # of the 2178-base crops, so the 2177-base windows scored start at 2 … 8.
    ref_window = their_window(chrom, pos, chrom[pos - 1], alt, bin_size)[0]
    reverse_starts = sorted(ref_window.index(reverse_complement(w)) for w in got[1:14:2])
    assert reverse_starts == [2, 3, 4, 5, 6, 7, 8]
    assert result["results"][0]["window_start"] == pos - 1 - 2185 // 2

    assert centred["ensemble"]["geometry"] == "centred"
    long = chrom[pos - 1 - (seq_len + 6) // 2:][:seq_len + 6]
    assert [dna.decode(w) for w in centred_windows[:14]] == [
        s for i in range(7) for s in (long[i:i + seq_len], reverse_complement(long[i:i + seq_len]))]


def test_batch_geometry_flag():
    parser = build_parser()
    base = ["variants", "in.vcf", "--out", "o.vcf.gz", "--fasta", "g.fa", "--conditions", "A"]
    assert ensemble_from(parser.parse_args(base)).to_json() == {"shifts": 7, "strands": 2, "geometry": "reference"}
    assert ensemble_from(parser.parse_args(base + ["--geometry", "centred"])).geometry == "centred"
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--geometry", "sideways"])
    tracks = parser.parse_args(["tracks", "chr1", "--out", "d", "--fasta", "g.fa", "--conditions", "A"])
    assert ensemble_from(tracks).geometry == "centred"  # bigWig tracks keep the plain, centred windows


# ---- 2. parity with their geometry on a checkpoint in their format ------------------------------------------------
@pytest.fixture(scope="module")
def their_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReferenceFixture, Path]:
    root = tmp_path_factory.mktemp("their_geometry")
    fixture = build_reference_checkpoint(root / "ckpt")
    return fixture, import_reference(fixture.checkpoint, fixture.mapping, root / "repo", name="theirs")


def their_onehot(window: str) -> torch.Tensor:
    """Their DNATokenizer(seq_order=2) + one-hot with N_max=0: [16, len − 1], AA, AC, … TT, zeros where an N is."""
    index = {b: i for i, b in enumerate("ACGT")}
    out = torch.zeros(16, len(window) - 1)
    for j in range(len(window) - 1):
        a, b = window[j], window[j + 1]
        if a in index and b in index:
            out[index[a] * 4 + index[b], j] = 1.0
    return out


def their_rc(onehot: torch.Tensor) -> torch.Tensor:
    """Their onehot_reverse_complement_func: channel k takes the channel of rc(k), then the positions flip."""
    pairs = [a + b for a in "ACGT" for b in "ACGT"]
    complement = str.maketrans("ACGT", "TGCA")
    permute = [pairs.index(p.translate(complement)[::-1]) for p in pairs]
    return torch.flip(onehot[permute, :], (1,))


@torch.no_grad()
def eager_features(model, onehot: torch.Tensor) -> torch.Tensor:
    """The eager trunk from the one-hot input on (any length): stem, tower, dilated blocks, crop, pointwise, BN."""
    x = model.dilated_residual_block(model.tower(model.stem(onehot)))
    x = x[:, :, model.cfg.crop:x.shape[2] - model.cfg.crop]
    return model.bn_features(model.pointwise(x).flatten(1))


@torch.no_grad()
def their_effects(model, track_index: list[int], windows: tuple[str, str]) -> dict[str, np.ndarray]:
    """Their ReverseComplementShiftWrapper: mean over 7 shifts x 2 strands of probabilities, bio/tech logits and
    features (float64 means), alt − ref."""
    w_tech, w_bio, _ = model.head_weights(model.track_codes[track_index])
    bias = model.bias[track_index]
    out = []
    for window in windows:
        forward = their_onehot(window)[None]
        rc = their_rc(forward[0])[None]
        n = SHIFT_LEN - 1
        crops = torch.cat([s[:, :, i:s.shape[2] - n + i] for i in range(n) for s in (forward, rc)])
        assert crops.shape[2] == 2177
        f = eager_features(model, crops).double()
        f_tech, f_bio = f[:, :model.d_tech], f[:, model.d_tech:]
        logit_bio, logit_tech = f_bio @ w_bio.double().T, f_tech @ w_tech.double().T
        probability = torch.sigmoid(logit_bio + logit_tech + bias.double())
        out.append({"probability": probability.mean(0), "logit_bio": logit_bio.mean(0),
                    "logit_tech": logit_tech.mean(0), "f_bio": f_bio.mean(0), "f_tech": f_tech.mean(0)})
    return {k: (out[1][k] - out[0][k]).numpy() for k in out[0]}


def test_effects_match_their_script_on_their_checkpoint(their_model, tmp_path):
    fixture, repository = their_model
    genome = write_genome(tmp_path / "g.fa", {"chr3": 12000}, seed=5)
    chrom = genome.sequences["chr3"]
    variants = [
        {"chrom": "chr3", "pos": 5000, "ref": chrom[4999], "alt": "G" if chrom[4999] != "G" else "T"},
        {"chrom": "chr3", "pos": 6000, "ref": chrom[5999:6004], "alt": chrom[5999]},          # deletion
        {"chrom": "chr3", "pos": 7000, "ref": chrom[6999], "alt": chrom[6999] + "CCGAT"},      # insertion
    ]
    tracks = list(fixture.df.index)
    chosen = [0, 3, 5]
    body = {"variants": variants, "conditions": [tracks[k] for k in chosen], "return_features": True}
    (result, _), (centred, _), (without, _) = run_variants(
        repository, genome.path, body, {**body, "ensemble": {"geometry": "centred"}},
        {**body, "return_features": False})
    gaps, errors = [], []
    for v, got, other in zip(variants, result["results"], centred["results"]):
        expected = their_effects(fixture.model, chosen, their_window(chrom, v["pos"], v["ref"], v["alt"], 2185))
        for quantity in ("probability", "logit_bio", "logit_tech"):
            values = np.array([e[f"delta_{quantity}"] for e in got["effects"]])
            np.testing.assert_allclose(values, expected[quantity], atol=1e-5, rtol=0, err_msg=f"{v} {quantity}")
            errors.append(np.abs(values - expected[quantity]))
            gaps.append(np.abs(np.array([e[f"delta_{quantity}"] for e in other["effects"]]) - expected[quantity]))
        np.testing.assert_allclose(got["delta_f_bio"], expected["f_bio"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["delta_f_tech"], expected["f_tech"], atol=1e-5, rtol=0)
        assert np.abs(expected["probability"]).max() > 1e-3  # the effects are not trivially zero
    # The centred option is a different geometry: far beyond the tolerance above from their numbers.
    assert max(g.max() for g in gaps) > 1e-3
    print(f"max |service - theirs| {max(e.max() for e in errors):.2e}; "
          f"centred - theirs {max(g.max() for g in gaps):.2e}")
    assert "delta_f_bio" not in without["results"][0]


@torch.no_grad()
def test_the_trunk_never_sees_the_last_base_of_their_crops(their_model):
    """Why scoring the first 2177 bases of their 2178-base crops is exact: the central output bin's receptive field
    is bases 125 … 2051 (docs/variant-effects.md). If the architecture changes, this fails before parity drifts."""
    model = their_model[0].model
    rng = np.random.default_rng(3)
    windows = torch.from_numpy(rng.integers(0, 4, size=(2, 2178), dtype=np.uint8))
    plain = model.features(windows[:, :2177])
    assert torch.equal(model.features(windows), plain)
    for base, seen in ((124, False), (125, True), (2051, True), (2052, False), (2176, False)):
        changed = windows[:, :2177].clone()
        changed[:, base] = (changed[:, base] + 1) % 4
        assert bool((model.features(changed) - plain).abs().max() > 0) is seen, base


def test_an_unknown_geometry_is_a_named_client_error():
    from pydantic import ValidationError

    from service.errors import from_validation_error

    body = {"variants": [{"chrom": "chr1", "pos": 5, "ref": "A", "alt": "C"}], "conditions": ["X"],
            "ensemble": {"geometry": "sideways"}}
    with pytest.raises(ValidationError) as caught:
        VariantRequest.model_validate(body)
    error = from_validation_error(caught.value)
    assert error.field == "ensemble.geometry" and 400 <= error.status < 500 and "centred" in error.message
