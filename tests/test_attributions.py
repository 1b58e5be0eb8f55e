"""Attribution maps (service.core.attributions, service.core.attribution_gradients) on the bundled demo model.

ISM is checked against an independent computation (mutate the string, encode, run the embedded backend and
service.core.scoring.score, subtract), and its bookkeeping over a whole 2177-base window against a backend whose
features are a hand-set linear function of the bases (the exact answer is known in closed form). The gradient
methods are checked for the two properties they promise: logit_bio + logit_tech = logit, and IG completeness.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mfd_common import tokens as dna
from service.core.attribution_gradients import GradientEntryError, TrunkGradients, project_to_bases, \
    require_gradient_backend
from service.core.attributions import PARTS, AttributionInputError, check_window, ism, ism_window_count
from service.backends.base import Backend, HeadWeights
from service.backends.embedded import EmbeddedBackend
from service.repository import load_repository
from service.core.scoring import score
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = [{"biosample": "K562", "target": "GATA1", "assay": "ChIP-seq", "lab": "lab-A"},
              {"biosample": "HepG2", "target": "HNF4A", "lab": "lab-C"}, {}]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread, as the service runs on CPU: on the shared 2-core machine torch's default (all cores)
    made the export test 6x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bundled():
    """(repository, started EmbeddedBackend, HeadWeights for CONDITIONS, event loop) on one CPU thread."""
    repository = load_repository(ROOT / "model_repository")
    backend = EmbeddedBackend(Settings.from_env({"MFD_TORCH_THREADS": "1"}), repository)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(backend.start())
    weights = loop.run_until_complete(backend.head(repository.codec.encode_many(CONDITIONS)))
    yield repository, backend, weights, loop
    loop.run_until_complete(backend.close())
    loop.close()


@pytest.fixture(scope="module")
def gradients(bundled):
    repository = bundled[0]
    return TrunkGradients.from_file(repository.trunk_path, repository.card.d_tech)


def random_sequence(seed: int, length: int) -> str:
    return "".join(np.random.default_rng(seed).choice(list("ACGT"), length))


def independent_ism(repository, backend, weights, loop, sequence: str, start: int, end: int) -> np.ndarray:
    """[K, P, W, 4] by hand: one mutated string per (position, base), scored like /predict scores windows."""
    variants = [sequence[:p] + b + sequence[p + 1:] for p in range(start, end) for b in "ACGT"]
    features = loop.run_until_complete(backend.features(dna.encode_many([sequence] + variants)))
    scores = score(features, repository.card.d_tech, weights)
    table = np.stack([scores.logit, scores.logit_bio, scores.logit_tech], axis=2)      # [1 + 4W, K, P]
    effects = table[1:] - table[:1]
    return effects.reshape(end - start, 4, *table.shape[1:]).transpose(2, 3, 0, 1)


# ---- ISM on the bundled model ----------------------------------------------------------------------------

def test_ism_equals_mutating_the_sequence_by_hand(bundled):
    repository, backend, weights, loop = bundled
    sequence = random_sequence(1, repository.card.seq_len)
    sequence = sequence[:1100] + "N" + sequence[1101:]                                 # an N inside the window
    start, end = 1090, 1112
    got = loop.run_until_complete(ism(dna.encode_many([sequence]), backend.features, weights,
                                      repository.card.d_tech, window=(start, end), chunk_size=17))
    assert got.maps.shape == (1, len(CONDITIONS), 3, end - start, 4) and got.maps.dtype == np.float32
    assert got.parts == PARTS and (got.start, got.end) == (start, end)
    want = independent_ism(repository, backend, weights, loop, sequence, start, end)
    np.testing.assert_allclose(got.maps[0], want, atol=1e-4, rtol=0)
    assert np.abs(want).max() > 0.05                                                  # the trunk reacts at all
    own = dna.encode(sequence[start:end])
    positions = np.flatnonzero(own < 4)
    assert np.all(got.maps[0][:, :, positions, own[positions]] == 0.0)                # exactly, not approximately
    n_at = 1100 - start                                                                # N: four real substitutions
    assert np.all(got.maps[0][:, 0, n_at, :] != 0.0)
    assert got.details["forward_passes"] == ism_window_count(dna.encode_many([sequence]), (start, end)) == \
        1 + 3 * (end - start) + 1


def test_window_ism_is_the_larger_map_restricted(bundled):
    """Mutating positions [1000, 1010) gives the same map as mutating [990, 1030) read at [1000, 1010)."""
    repository, backend, weights, loop = bundled
    tokens = dna.encode_many([random_sequence(s, repository.card.seq_len) for s in (2, 3)])
    wide = loop.run_until_complete(ism(tokens, backend.features, weights, repository.card.d_tech,
                                       window={"start": 990, "end": 1030}, parts=["logit_tech", "logit"]))
    narrow = loop.run_until_complete(ism(tokens, backend.features, weights, repository.card.d_tech,
                                         window={"start": 1000, "end": 1010}, parts=["logit_tech", "logit"]))
    assert narrow.maps.shape == (2, len(CONDITIONS), 2, 10, 4) and narrow.parts == ("logit_tech", "logit")
    np.testing.assert_allclose(narrow.maps, wide.maps[..., 10:20, :], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(narrow.tokens, tokens[:, 1000:1010])
    np.testing.assert_allclose(narrow.score, wide.score, atol=1e-5)


def test_ism_reverse_complement_averages_both_strands(bundled):
    repository, backend, weights, loop = bundled
    sequence = random_sequence(4, repository.card.seq_len)
    tokens = dna.encode_many([sequence])
    both = loop.run_until_complete(ism(tokens, backend.features, weights, repository.card.d_tech,
                                       window=(500, 505), reverse_complement=True))
    forward = loop.run_until_complete(ism(tokens, backend.features, weights, repository.card.d_tech,
                                          window=(500, 505)))
    backward = loop.run_until_complete(ism(dna.reverse_complement(tokens), backend.features, weights,
                                           repository.card.d_tech, window=(2177 - 505, 2177 - 500)))
    # position p, base b on the forward strand is position L-1-p, base 3-b on the reverse strand
    mirrored = backward.maps[..., ::-1, ::-1]
    np.testing.assert_allclose(both.maps, 0.5 * (forward.maps + mirrored), atol=1e-5, rtol=0)
    assert both.details["forward_passes"] == 2 * forward.details["forward_passes"]


# ---- ISM bookkeeping over a full window, exact ------------------------------------------------------------

class LinearBackend(Backend):
    """features[n] = Σ_p E[p, base_p] (an N adds 0): a part's ISM is then exactly v·(E[p, b] − E[p, ref])."""

    name = "linear"

    def __init__(self, length: int, d: int, seed: int = 0):
        self.table = np.random.default_rng(seed).normal(size=(length, 5, d)).astype(np.float32)
        self.table[:, 4] = 0.0
        self.calls = 0

    async def features(self, tokens: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.table[np.arange(tokens.shape[1]), tokens].sum(axis=1, dtype=np.float64).astype(np.float32)

    async def head(self, codes: np.ndarray) -> HeadWeights:
        raise NotImplementedError


def test_full_window_ism_matches_closed_form_and_window_is_a_slice():
    length, d_tech, d = 2177, 3, 6
    backend = LinearBackend(length, d)
    rng = np.random.default_rng(1)
    weights = HeadWeights(rng.normal(size=(2, d_tech)).astype(np.float32),
                          rng.normal(size=(2, d - d_tech)).astype(np.float32), np.array([5.0, -3.0], np.float32))
    tokens = rng.integers(0, 4, size=(2, length), dtype=np.uint8)
    tokens[0, [0, 7, length - 1]] = dna.N_CODE
    full = asyncio.run(ism(tokens, backend.features, weights, d_tech, chunk_size=1000, max_in_flight=3))
    table = backend.table.astype(np.float64)                                          # [L, 5, D]
    delta = table[None, :, :4] - table[np.arange(length)[None], tokens][:, :, None]    # [N, L, 4, D]
    v = {"logit": np.concatenate([weights.w_tech, weights.w_bio], 1),
         "logit_bio": np.concatenate([np.zeros_like(weights.w_tech), weights.w_bio], 1),
         "logit_tech": np.concatenate([weights.w_tech, np.zeros_like(weights.w_bio)], 1)}
    want = np.stack([np.einsum("nlbd,kd->nklb", delta, v[p]) for p in PARTS], axis=2)  # [N, K, P, L, 4]
    assert full.maps.shape == want.shape == (2, 2, 3, length, 4)
    np.testing.assert_allclose(full.maps, want, atol=2e-4, rtol=0)                    # float32 sums of ~2177 terms
    assert backend.calls == -(-ism_window_count(tokens) // 1000)
    window = asyncio.run(ism(tokens, backend.features, weights, d_tech, window=(5, 40)))
    np.testing.assert_allclose(window.maps, full.maps[..., 5:40, :], atol=2e-4, rtol=0)
    assert np.all(full.maps[1, :, :, np.arange(length), tokens[1]] == 0.0)


def test_a_failing_backend_call_stops_the_remaining_chunks():
    class Failing(LinearBackend):
        async def features(self, tokens: np.ndarray) -> np.ndarray:
            await asyncio.sleep(0.001)                                                # a call takes time
            if self.calls == 2:
                self.calls += 1
                raise RuntimeError("backend went away")
            return await super().features(tokens)

    backend = Failing(2177, 4)
    weights = HeadWeights(np.ones((1, 2), np.float32), np.ones((1, 2), np.float32), np.zeros(1, np.float32))
    tokens = np.zeros((1, 2177), np.uint8)
    with pytest.raises(RuntimeError, match="went away"):
        asyncio.run(ism(tokens, backend.features, weights, 2, chunk_size=100, max_in_flight=2))
    assert backend.calls <= 4                                                         # of 66 chunks


def test_per_base_values_and_one_sequences_arrays():
    from service.core.attributions import Attribution
    maps = np.zeros((1, 1, 2, 3, 4), np.float32)                                     # N=1, K=1, P=2, W=3
    maps[0, 0, 0, 0] = [0.0, 0.3, -0.6, 0.9]                                          # own base A
    maps[0, 0, 0, 1] = [1.0, 2.0, 3.0, 4.0]                                           # an N: no own base
    maps[0, 0, 1, 2] = [-1.5, 0.0, 0.0, 0.0]                                          # own base C
    result = Attribution("ism", ("logit", "logit_tech"), 10, 13, maps, np.array([[[0.5, -0.5]]], np.float32),
                         np.array([[0, 4, 1]], np.uint8))
    values = result.per_base()
    assert values.shape == (1, 1, 2, 3)
    np.testing.assert_allclose(values[0, 0, 0, [0, 2]], [-0.2, 0.0], atol=1e-7)
    assert np.isnan(values[0, 0, :, 1]).all()
    np.testing.assert_allclose(values[0, 0, 1, 2], 0.5, atol=1e-7)
    gradient = Attribution("gradient_x_input", result.parts, 10, 13, maps, result.score, result.tokens)
    np.testing.assert_allclose(gradient.per_base()[0, 0, 0], [0.6, 10.0, 0.0], atol=1e-6)
    one = result.for_sequence(0)
    assert set(one) == {"score", "maps"} and set(one["maps"]) == {"logit", "logit_tech"}
    np.testing.assert_array_equal(one["maps"]["logit_tech"], maps[0, :, 1])
    assert one["score"]["logit_tech"].tolist() == [-0.5]


# ---- gradient methods -------------------------------------------------------------------------------------

def test_projection_puts_half_of_each_dinucleotide_on_each_base():
    dinuc = np.zeros((16, 3))                                                         # 4 bases, 3 pairs
    dinuc[4 * 2 + 1, 0] = 2.0                                                         # GC at bases 0-1
    dinuc[4 * 3 + 3, 2] = -1.0                                                        # TT at bases 2-3
    bases = project_to_bases(dinuc)
    want = np.zeros((4, 4))
    want[0, 2], want[1, 1], want[2, 3], want[3, 3] = 1.0, 1.0, -0.5, -0.5
    np.testing.assert_array_equal(bases, want)
    many = np.random.default_rng(0).normal(size=(2, 16, 40))
    np.testing.assert_allclose(project_to_bases(many).sum(axis=(1, 2)), many.sum(axis=(1, 2)), rtol=1e-12)


def test_gradient_entry_reproduces_the_trunk(bundled, gradients):
    repository, backend, _, loop = bundled
    tokens = dna.encode_many([random_sequence(5, repository.card.seq_len)])
    want = loop.run_until_complete(backend.features(tokens))
    with torch.no_grad():
        got = gradients.features(gradients.dinucleotides(tokens)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_gradient_entry_refuses_a_trunk_without_its_submodules(tmp_path):
    class Opaque(torch.nn.Module):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return tokens.float().mean(dim=1, keepdim=True)
    path = tmp_path / "opaque.pt"
    torch.jit.script(Opaque()).save(str(path))
    with pytest.raises(GradientEntryError, match="stem"):
        TrunkGradients.from_file(path, 1)


@pytest.mark.parametrize("method", ["gradient_x_input", "integrated_gradients"])
def test_gradient_maps_of_the_parts_add_up_to_the_logit_map(bundled, gradients, method):
    repository, _, weights, _ = bundled
    tokens = dna.encode_many([random_sequence(6, repository.card.seq_len)])
    tokens[0, 300:304] = dna.N_CODE
    kwargs = {"steps": 8} if method == "integrated_gradients" else {}
    result = getattr(gradients, method)(tokens, weights, **kwargs)
    logit, bio, tech = (result.maps[:, :, PARTS.index(p)] for p in PARTS)
    scale = np.abs(logit).max()
    assert scale > 1e-3
    np.testing.assert_allclose(bio + tech, logit, atol=1e-4 * scale, rtol=0)
    # the zero baseline makes the input one-hot: only the sequence's own bases carry attribution, an N none
    own = np.zeros((tokens.shape[1], 4), bool)
    own[np.flatnonzero(tokens[0] < 4), tokens[0][tokens[0] < 4]] = True
    assert np.all(result.maps[0][..., ~own] == 0.0)
    assert np.all(result.maps[0][..., 301:303, :] == 0.0)


def test_many_conditions_take_the_feature_jacobian_path_with_the_same_maps(bundled, gradients):
    """K × P > D switches to the D feature gradients contracted afterwards; the maps must not change."""
    repository, backend, weights, loop = bundled
    conditions = [t.metadata for t in repository.card.tracks] + CONDITIONS + [{"lab": "lab-B"}] * 8
    many = loop.run_until_complete(backend.head(repository.codec.encode_many(conditions)))
    assert 3 * len(conditions) > repository.card.d_tech + repository.card.d_bio
    tokens = dna.encode_many([random_sequence(7, repository.card.seq_len)])
    together = gradients.gradient_x_input(tokens, many)
    alone = gradients.gradient_x_input(tokens, weights)
    k = len(repository.card.tracks)
    np.testing.assert_allclose(together.maps[:, k:k + len(CONDITIONS)], alone.maps, atol=1e-6, rtol=0)


def test_integrated_gradients_are_complete(bundled, gradients):
    """Σ IG = s(x) − s(all-N window) up to quadrature error.

    The integrand is only piecewise smooth (max-pool switches; it steepens near α = 1), so Gauss–Legendre does
    not reach its smooth-case accuracy, nor fall monotonically with the node count. Measured gap / max |Δs|:
    0.7–6% at 16–32 nodes (3 windows), 0.3–7.6% at 50 (4), 0.4–3.4% at 64 (13 windows; this one 3.2%),
    0.2–2.5% at 128 (8). The test uses 64 nodes and allows 10%, three times the worst seen; a lost factor
    (no ×(x − x'), a projection that drops half) would be off by 50% or more.
    """
    repository, backend, weights, loop = bundled
    tokens = dna.encode_many([random_sequence(8, repository.card.seq_len)])
    result = gradients.integrated_gradients(tokens, weights, steps=64)
    total = result.maps.sum(axis=(3, 4), dtype=np.float64)                            # [N, K, P]
    np.testing.assert_allclose(total, result.details["dinucleotide_sum"], rtol=1e-4, atol=1e-6)
    # the zero baseline is the all-N window: its score is the served score of N×L
    all_n = np.full((1, repository.card.seq_len), dna.N_CODE, np.uint8)
    served = score(loop.run_until_complete(backend.features(all_n)), repository.card.d_tech, weights)
    np.testing.assert_allclose(result.baseline_score[0, :, 0], served.logit[0], atol=1e-4)
    delta = result.score - result.baseline_score
    assert np.abs(delta).max() > 0.1
    assert np.abs(total - delta).max() <= 0.10 * np.abs(delta).max()
    np.testing.assert_allclose(result.details["completeness_gap"], total - delta, atol=1e-4)
    one = result.for_sequence(0)
    assert set(one) == {"score", "maps", "baseline_score", "completeness_gap"}
    assert one["completeness_gap"]["logit_bio"].shape == (len(CONDITIONS),)


def test_gradient_strand_average_is_the_mean_of_both_strands_maps(bundled, gradients):
    """Position p, base b of the reverse strand's map is position L−1−p, base 3−b on the forward strand."""
    repository, _, weights, _ = bundled
    tokens = dna.encode_many([random_sequence(11, repository.card.seq_len)])
    both = gradients.gradient_x_input(tokens, weights, reverse_complement=True)
    forward = gradients.gradient_x_input(tokens, weights)
    backward = gradients.gradient_x_input(dna.reverse_complement(tokens), weights)
    np.testing.assert_allclose(both.maps, 0.5 * (forward.maps + backward.maps[..., ::-1, ::-1]), atol=1e-6, rtol=0)
    assert np.abs(forward.maps - both.maps).max() > 1e-3                              # the strands do differ


def test_integrated_gradients_put_a_planted_motif_in_the_biological_part(bundled, gradients):
    """The demo model learnt GATA1 binding as biology (tests/test_bundled_model.py): two GATA1 consensus sites
    planted at the window's centre must carry the K562-GATA1 logit_bio attribution and almost none of the
    logit_tech one. Measured on four random backgrounds: the 22 motif bases hold 4.1–4.6 of logit_bio (the
    other 2155 bases −0.8–−0.2 in all), −0.14–0.01 of logit_tech, and only 7–12 of 2177 positions exceed their mean."""
    from training.data.demo_genome import JASPAR
    repository, backend, _, loop = bundled
    counts = np.array(JASPAR["GATA1"][1])
    consensus = "".join("ACGT"[i] for i in counts.argmax(axis=0))
    sequence = random_sequence(0, repository.card.seq_len)
    motif = np.zeros(repository.card.seq_len, bool)
    for at in (1070, 1100):
        sequence = sequence[:at] + consensus + sequence[at + len(consensus):]
        motif[at:at + len(consensus)] = True
    weights = loop.run_until_complete(backend.head(repository.codec.encode_many(
        [{"biosample": "K562", "target": "GATA1", "assay": "ChIP-seq", "lab": "lab-B"}])))
    result = gradients.integrated_gradients(dna.encode_many([sequence]), weights, steps=32)
    per_base = result.maps[0, 0].sum(axis=-1)                                          # [P, L]
    bio, tech = per_base[PARTS.index("logit_bio")], per_base[PARTS.index("logit_tech")]
    assert bio[motif].sum() > 2.0
    assert abs(tech[motif].sum()) < 0.5
    assert (bio > bio[motif].mean()).sum() < 0.02 * bio.size                          # top 2% of positions


def test_gradient_window_is_a_slice_of_the_full_map(bundled, gradients):
    repository, _, weights, _ = bundled
    tokens = dna.encode_many([random_sequence(9, repository.card.seq_len)])
    full = gradients.gradient_x_input(tokens, weights, parts=["logit_bio"])
    part = gradients.gradient_x_input(tokens, weights, parts=["logit_bio"], window=(100, 180))
    assert part.maps.shape == (1, len(CONDITIONS), 1, 80, 4)
    np.testing.assert_array_equal(part.maps, full.maps[..., 100:180, :])


def test_gradient_maps_do_not_depend_on_how_sequences_are_grouped(bundled, gradients):
    repository, _, weights, _ = bundled
    tokens = dna.encode_many([random_sequence(s, repository.card.seq_len) for s in (13, 14, 15)])
    small = TrunkGradients(gradients.trunk, repository.card.d_tech, chunk_size=4, check=False)
    together = gradients.gradient_x_input(tokens, weights, window=(1000, 1100))      # one group of three
    grouped = small.gradient_x_input(tokens, weights, window=(1000, 1100))           # three groups of one
    np.testing.assert_allclose(grouped.maps, together.maps, atol=1e-6, rtol=0)
    alone = gradients.gradient_x_input(tokens[1:2], weights, window=(1000, 1100))
    np.testing.assert_allclose(together.maps[1:2], alone.maps, atol=1e-6, rtol=0)
    assert np.abs(together.maps[0] - together.maps[1]).max() > 1e-3


@pytest.mark.parametrize("order", [2, 1])
def test_strand_averaged_and_single_base_exports(tmp_path, order):
    """A trunk exported with strand averaging (and an order-1 one) passes the entry check, which fails if the
    float path forgets the averaging; its maps are strand-symmetric and additive."""
    from tests.fixtures.models import build_tiny_checkpoint
    from training.export import export_repository
    out = export_repository(build_tiny_checkpoint(tmp_path / "ckpt", onehot_order=order), tmp_path / "repo",
                            reverse_complement_average=True)
    repository = load_repository(out)
    grads = TrunkGradients.from_file(repository.trunk_path, repository.card.d_tech)
    assert grads.strand_average and grads.channels == 4 ** order
    rng = np.random.default_rng(order)
    weights = HeadWeights(*(rng.normal(size=(2, d)).astype(np.float32) for d in (repository.card.d_tech,
                                                                                repository.card.d_bio)),
                          np.zeros(2, np.float32))
    tokens = dna.encode_many([random_sequence(20, repository.card.seq_len)])
    forward = grads.gradient_x_input(tokens, weights)
    backward = grads.gradient_x_input(dna.reverse_complement(tokens), weights)
    scale = np.abs(forward.maps).max()
    assert scale > 1e-4
    np.testing.assert_allclose(forward.maps, backward.maps[..., ::-1, ::-1], atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(forward.maps[:, :, 1] + forward.maps[:, :, 2], forward.maps[:, :, 0],
                               atol=1e-4 * scale, rtol=0)
    grads.strand_average = False
    with pytest.raises(GradientEntryError, match="differ from trunk"):
        grads._check_entry()


def test_gradient_methods_are_refused_on_triton_and_ism_is_not():
    with pytest.raises(AttributionInputError, match="ism") as info:
        require_gradient_backend("integrated_gradients", "triton")
    assert info.value.field == "method"
    require_gradient_backend("ism", "triton")
    require_gradient_backend("gradient_x_input", "embedded")


# ---- hostile input -----------------------------------------------------------------------------------------

def test_windows_come_as_dicts_pairs_or_objects():
    assert check_window(None, 2177) == (0, 2177)
    assert check_window({"start": 3, "end": 9}, 2177) == check_window((3, 9), 2177) == \
        check_window(SimpleNamespace(start=np.int64(3), end=9), 2177) == (3, 9)


@pytest.mark.parametrize("window, field", [
    ((-1, 10), "window.start"), ((0, 2178), "window.end"), ((10, 10), "window"), ((20, 10), "window"),
    ({"start": 1.5, "end": 3}, "window.start"), ({"start": True, "end": 3}, "window.start"),
    ({"start": 0}, "window.end"), ("0-10", "window"), ((1, 2, 3), "window"),
])
def test_bad_windows_name_the_field(window, field):
    with pytest.raises(AttributionInputError) as info:
        check_window(window, 2177)
    assert info.value.field == field


def test_bad_requests_name_the_field(bundled, gradients):
    repository, backend, weights, loop = bundled
    tokens = dna.encode_many([random_sequence(10, repository.card.seq_len)])
    cases = [
        (lambda: ism(np.zeros((0, 2177), np.uint8), backend.features, weights, 30), "sequences"),
        (lambda: ism(np.zeros((1, 0), np.uint8), backend.features, weights, 30), "sequences"),
        (lambda: ism(tokens + 5, backend.features, weights, 30), "sequences"),
        (lambda: ism(tokens, backend.features, weights, 30, parts=[]), "parts"),
        (lambda: ism(tokens, backend.features, weights, 30, parts=["logit", "bio"]), "parts[1]"),
        (lambda: ism(tokens, backend.features, weights, 30, window=(5, 3)), "window"),
    ]
    for make, field in cases:
        with pytest.raises(AttributionInputError) as info:
            loop.run_until_complete(make())
        assert info.value.field == field, (field, info.value)
    for kwargs, field in [({"steps": 0}, "steps"), ({"steps": "32"}, "steps"), ({"baseline": "shuffle"}, "baseline"),
                          ({"window": (0, 9999)}, "window.end")]:
        with pytest.raises(AttributionInputError) as info:
            gradients.integrated_gradients(tokens, weights, **kwargs)
        assert info.value.field == field


@pytest.mark.slow
def test_ism_through_a_real_triton_server_equals_embedded(triton_server, exported_repository):
    """ISM uses only Backend.features and HeadWeights, so the Triton backend gives the embedded backend's maps."""
    from service.backends.triton import TritonBackend
    repository = load_repository(exported_repository)
    base = Settings(model_repository=exported_repository, torch_threads=1)
    triton = TritonBackend(base.model_copy(update={"backend": "triton", "triton_url": triton_server.grpc_url}),
                           repository)
    embedded = EmbeddedBackend(base, repository)
    tokens = dna.encode_many([random_sequence(12, repository.card.seq_len)])
    codes = repository.codec.encode_many([t.metadata for t in repository.card.tracks[:2]])

    async def run():
        await triton.start()
        await embedded.start()
        try:
            weights = await embedded.head(codes)
            return [await ism(tokens, backend.features, weights, repository.card.d_tech, window=(700, 730),
                              chunk_size=64, max_in_flight=3) for backend in (triton, embedded)]
        finally:
            await triton.close()
            await embedded.close()

    via_triton, via_embedded = asyncio.run(run())
    assert np.abs(via_embedded.maps).max() > 1e-3
    np.testing.assert_allclose(via_triton.maps, via_embedded.maps, atol=1e-4, rtol=0)
    require_gradient_backend("ism", triton.name)
    with pytest.raises(AttributionInputError):
        require_gradient_backend("gradient_x_input", triton.name)
