"""Training layer (data): a small generated genome with tracks whose biology and technique are known: the demo and test
data.

No real genome can be downloaded here, so we plant the truth and check that MFD recovers it:

Biology — real TF motifs from JASPAR 2024 (count matrices below, cited by matrix ID) are sampled into ~8 % of the
128-bp bins each, as homotypic pairs (two instances per site, as in many enhancers; the claims flavour plants three
per site in 12 % of bins, see `DemoSpec`). A motif instance is bound in a biosample when the TF is active there (site
occupancy drawn once per site, so the same strong sites are bound across biosamples, as in real data):
    K562: GATA1, CTCF, CEBPB    HepG2: HNF4A, CEBPB, CTCF    GM12878: SPI1, CTCF
Technique — what the experiment adds or loses, independent of the biology:
    * peak depth: each track calls only its strongest bound sites (fraction `depth`, set by lab and assay and
      reported as `read_depth` in the metadata), strength = the instance's PWM log-odds score + noise;
    * GC bias: lab-A calls extra peaks in GC-rich bins (probability rises steeply above 58 % GC), the same bins
      in every lab-A track, like the reproducible artefacts of a protocol;
    * a low rate of random false peaks in every track.
The genome has a GC landscape (segments of varying GC) so GC-rich bins exist without any motif.

`DemoSpec` sets the planting: the defaults are the data the bundled model was trained on; the claims flavour of
`training.evaluation.demo_preset` plants denser sites of three instances each, GC-neutral (`_restore_gc`), so that
a C=30 trunk finds every motif early and the biology is independent of the GC artefact by construction.

Outputs (deterministic for a given spec): genome.fa, peaks/<id>.narrowPeak, tracks.tsv, config.yaml (copied
from training/configs/demo.yaml) and truth.npz / truth.json with per-bin GC and motif presence and each track's
technical parameters, so tests can compare a model's read-outs with the planted truth.

JASPAR matrices: Castro-Mondragon et al., JASPAR 2022, NAR 50:D165 / Rauluseviciute et al., JASPAR 2024,
NAR 52:D174; CC BY 4.0. Values copied from the JASPAR 2024 release (the SQLite file shipped by the `pyjaspar`
PyPI package), rows A, C, G, T.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfd_common.geometry import BIN_SIZE
from mfd_common.tokens import ALPHABET

JASPAR: dict[str, tuple[str, list[list[int]]]] = {
    "CTCF": ("MA0139.2", [
        [281, 56, 8, 744, 40, 107, 851, 5, 333, 54, 12, 56, 104, 372, 82],
        [49, 800, 903, 13, 528, 433, 11, 0, 3, 12, 0, 8, 733, 13, 482],
        [449, 21, 0, 65, 334, 48, 32, 903, 566, 504, 890, 775, 5, 507, 307],
        [134, 36, 2, 91, 11, 324, 18, 3, 9, 341, 8, 71, 67, 17, 37]]),
    "GATA1": ("MA0035.4", [
        [22209, 17328, 3953, 1314, 49692, 67550, 2206, 2567, 7397, 26545, 22656],
        [12209, 14489, 62419, 595, 710, 1292, 1238, 65937, 3025, 11186, 15261],
        [13955, 11088, 2712, 652, 856, 988, 618, 1471, 765, 14358, 9325],
        [23455, 28923, 2744, 69267, 20570, 1998, 67766, 1853, 60641, 19739, 24586]]),
    "HNF4A": ("MA0114.4", [
        [10046, 9788, 1468, 43321, 40217, 43264, 716, 927, 2770, 1363, 36654, 13574, 15279],
        [7136, 14435, 41443, 1257, 1370, 544, 916, 695, 37804, 42341, 2782, 9863, 9070],
        [13905, 9294, 1237, 1061, 3615, 1897, 43528, 2184, 1826, 643, 2936, 13014, 11714],
        [15417, 12987, 2356, 865, 1302, 799, 1344, 42698, 4104, 2157, 4132, 10053, 10441]]),
    "CEBPB": ("MA0466.2", [
        [10585, 33, 17, 10930, 393, 3521, 2527, 22732, 22732, 155],
        [5007, 34, 14, 34, 22732, 555, 22732, 636, 9, 10617],
        [6282, 8, 2276, 11803, 221, 22732, 3, 9, 0, 940],
        [859, 22732, 22732, 2237, 2217, 486, 2135, 0, 9, 12116]]),
    "SPI1": ("MA0080.5", [
        [42201, 48240, 54154, 78831, 81904, 99739, 15301, 113087, 5230, 3323, 129177, 127888, 11279, 13931,
         11028, 90925, 60831, 59460, 39411, 42838],
        [22587, 21262, 20183, 11424, 12269, 2914, 10958, 3425, 568, 954, 1339, 792, 9931, 3717, 12697, 11316,
         20113, 16927, 26246, 24884],
        [38405, 34277, 37341, 25893, 25580, 13479, 100825, 12544, 125703, 127639, 1407, 1308, 109802, 7231,
         103485, 20647, 30577, 29188, 34829, 28335],
        [30010, 29424, 21525, 17055, 13450, 17071, 6119, 4147, 1702, 1287, 1280, 3215, 2191, 108324, 5993,
         10315, 21682, 27628, 32717, 37146]]),
}

# Share of a TF's motif sites bound in each biosample (0 = TF not expressed there).
ACTIVITY = {
    "K562": {"GATA1": 0.95, "CTCF": 0.9, "CEBPB": 0.6},
    "HepG2": {"HNF4A": 0.95, "CEBPB": 0.9, "CTCF": 0.8},
    "GM12878": {"SPI1": 0.95, "CTCF": 0.85},
}
BIOSAMPLES = {  # organ (multi-label), life stage
    "K562": ("blood,bone marrow", "adult"),
    "HepG2": ("liver", "child"),
    "GM12878": ("blood", "adult"),
}
LAB_DEPTH = {("lab-A", "ChIP-seq"): 0.85, ("lab-B", "ChIP-seq"): 0.7, ("lab-C", "CUT&RUN"): 0.95}
GC_BIASED_LABS = {"lab-A"}
GC_BIAS_MAX, GC_BIAS_CENTRE, GC_BIAS_SCALE = 0.4, 0.65, 0.025
FALSE_PEAK_RATE = 0.002

# (biosample, target, lab, assay, release year, replicates)
TRACKS = [
    ("K562", "CTCF", "lab-A", "ChIP-seq", 2012, 2),
    ("K562", "CTCF", "lab-B", "ChIP-seq", 2016, 2),
    ("K562", "GATA1", "lab-A", "ChIP-seq", 2012, 2),
    ("K562", "GATA1", "lab-B", "ChIP-seq", 2017, 1),
    ("K562", "CEBPB", "lab-C", "CUT&RUN", 2020, 2),
    ("HepG2", "CTCF", "lab-A", "ChIP-seq", 2013, 2),
    ("HepG2", "HNF4A", "lab-A", "ChIP-seq", 2013, 2),
    ("HepG2", "HNF4A", "lab-B", "ChIP-seq", 2018, 2),
    ("HepG2", "CEBPB", "lab-B", "ChIP-seq", 2016, 1),
    ("HepG2", "CEBPB", "lab-C", "CUT&RUN", 2021, 2),
    ("GM12878", "CTCF", "lab-C", "CUT&RUN", 2019, 2),
    ("GM12878", "CTCF", "lab-B", "ChIP-seq", 2015, 2),
    ("GM12878", "SPI1", "lab-A", "ChIP-seq", 2011, 2),
    ("GM12878", "SPI1", "lab-B", "ChIP-seq", 2016, 2),
]

BIN = BIN_SIZE
MOTIF_BIN_RATE = 0.08      # per TF: share of bins holding one instance of its motif
SHARPEN = 2.0              # sample instances from PFM**2 (renormalised): high-affinity sites
COPIES = 2                 # motif instances per site (homotypic pair, one per half-bin)
MAX_COPIES = 4             # each instance needs a slot of BIN // copies bases wider than the longest motif (20)
CONFIGS = Path(__file__).resolve().parent.parent / "configs"   # training/configs/
TEMPLATE = CONFIGS / "demo.yaml"
MAPPING_TEMPLATE = CONFIGS / "demo_mapping.yaml"


@dataclass
class DemoSpec:
    chromosomes: dict[str, int]
    seed: int = 0
    motif_bin_rate: float = MOTIF_BIN_RATE
    copies: int = COPIES
    gc_neutral: bool = False   # planting a site leaves its bin's GC count as it was (see _restore_gc)

    def __post_init__(self) -> None:
        # checked here, not only in the command: an out-of-range spec would otherwise fail deep in the planting loop
        max_rate = 1 / len(JASPAR)
        if not 0 < self.motif_bin_rate <= max_rate:
            raise DemoSpecError("motif_bin_rate", f"must be in (0, {max_rate:g}] ({len(JASPAR)} TFs share each bin's "
                                                  f"draw), got {self.motif_bin_rate}")
        if not 1 <= self.copies <= MAX_COPIES:
            raise DemoSpecError("copies", f"must be 1-{MAX_COPIES} (each instance needs its own slot of the "
                                          f"{BIN}-bp bin), got {self.copies}")


class DemoSpecError(ValueError):
    """An out-of-range `DemoSpec` field, named so a command can report it as its own option."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


DEFAULT_CHROMOSOMES = {"chr1": 320_000, "chr2": 256_000, "chr3": 256_000, "chr4": 96_000, "chr5": 96_000}


def pfm_probabilities(counts: list[list[int]], sharpen: float = 1.0) -> np.ndarray:
    """[len, 4] base probabilities with a small pseudocount (so every base stays possible).

    `sharpen` > 1 raises the probabilities to that power before normalising: the sampled instances sit closer
    to the consensus (high-affinity sites), which a CPU-sized model learns in a few hundred steps.
    """
    matrix = np.asarray(counts, dtype=np.float64).T
    matrix = matrix + 0.01 * matrix.sum(axis=1, keepdims=True)
    matrix = (matrix / matrix.sum(axis=1, keepdims=True)) ** sharpen
    return matrix / matrix.sum(axis=1, keepdims=True)


def _sample_bases(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One base per row of `probs` [n, 4] (vectorised inverse-CDF sampling)."""
    u = rng.random(len(probs))[:, None]
    return (u > np.cumsum(probs, axis=1)[:, :3]).sum(axis=1).astype(np.uint8)


def _background(length: int, rng: np.random.Generator) -> np.ndarray:
    """A GC landscape: segments (mean 3 kb) of GC drawn from 0.33–0.70, bases drawn independently."""
    gc = np.empty(length)
    pos = 0
    while pos < length:
        seg = int(rng.geometric(1 / 3000)) + 200
        gc[pos:pos + seg] = rng.uniform(0.33, 0.70)
        pos += seg
    probs = np.stack([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2], axis=1)
    return _sample_bases(probs, rng)


def _restore_gc(bin_seq: np.ndarray, motif_mask: np.ndarray, gc_before: int, rng: np.random.Generator) -> None:
    """Flip non-motif bases of one bin (in place) until its G+C count is `gc_before` again.

    Why: an AT-rich motif (GATA1) planted into a bin lowers the bin's GC, so motif presence and GC become correlated
    by construction (-0.16 for GATA1 at three copies, measured). The GC-biased lab's artefacts follow GC, so a model
    whose biological read-out must be independent of its technical one would then be charged for separating two
    signals the generator had tied together. With the bin's GC restored, the biology is independent of the
    artefact by construction, which is the setting the paper's claims are about.
    """
    is_gc = np.isin(bin_seq, (1, 2))
    missing = gc_before - int(is_gc.sum())
    if missing == 0:
        return
    pool = np.flatnonzero(~motif_mask & (bin_seq < 4) & (is_gc if missing < 0 else ~is_gc))
    flip = rng.choice(pool, size=min(abs(missing), len(pool)), replace=False)
    bin_seq[flip] = rng.choice((0, 3) if missing < 0 else (1, 2), size=len(flip))


def generate(out: str | Path, spec: DemoSpec | None = None) -> Path:
    spec = spec or DemoSpec(dict(DEFAULT_CHROMOSOMES))
    out = Path(out)
    (out / "peaks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    tfs = list(JASPAR)
    pfms = {tf: pfm_probabilities(JASPAR[tf][1], SHARPEN) for tf in tfs}
    log_odds = {tf: np.log(pfm_probabilities(JASPAR[tf][1]) / 0.25) for tf in tfs}

    truth: dict[str, np.ndarray] = {}
    # per TF: (chrom idx, bin, centre, strength, occupancy)
    sites: dict[str, list[tuple[int, int, int, float, float]]] = {tf: [] for tf in tfs}
    fasta_lines: list[str] = []
    chrom_names = list(spec.chromosomes)
    for ci, (chrom, length) in enumerate(spec.chromosomes.items()):
        seq = _background(length, rng)
        n_bins = length // BIN
        choice = rng.random(n_bins)
        motif_of_bin = np.full(n_bins, -1, dtype=np.int8)
        for t, tf in enumerate(tfs):
            hit = (choice >= t * spec.motif_bin_rate) & (choice < (t + 1) * spec.motif_bin_rate)
            motif_of_bin[hit] = t
            width = len(pfms[tf])
            half = BIN // 2
            slot = BIN // spec.copies
            for b in np.flatnonzero(hit):
                # homotypic instances (a pair by default): one in each slot of the bin, each on a random strand
                bin_seq = seq[b * BIN:(b + 1) * BIN]          # a view: planting writes into seq
                gc_before = int(np.isin(bin_seq, (1, 2)).sum())
                motif_mask = np.zeros(BIN, dtype=bool)
                score = 0.0
                for copy in range(spec.copies):
                    inst = _sample_bases(pfms[tf], rng)
                    score += float(log_odds[tf][np.arange(width), inst].sum()) / spec.copies
                    if rng.random() < 0.5:
                        inst = (3 - inst)[::-1]
                    start = b * BIN + copy * slot + int(rng.integers(2, slot - width - 2))
                    seq[start:start + width] = inst
                    motif_mask[start - b * BIN:start - b * BIN + width] = True
                if spec.gc_neutral:
                    _restore_gc(bin_seq, motif_mask, gc_before, rng)
                centre = b * BIN + half
                sites[tf].append((ci, int(b), centre, score + rng.normal(0, 1.0), float(rng.random())))
        if ci == 0:  # an assembly gap, so the N filter has something to do
            seq[50_000:53_000] = 4
        gc_bin = np.isin(seq[: n_bins * BIN].reshape(n_bins, BIN), (1, 2)).mean(axis=1)
        truth[f"gc/{chrom}"] = gc_bin.astype(np.float32)
        truth[f"motif/{chrom}"] = motif_of_bin
        text = np.frombuffer(ALPHABET.encode(), np.uint8)[seq].tobytes().decode()
        fasta_lines.append(f">{chrom}")
        fasta_lines.extend(text[i:i + 60] for i in range(0, len(text), 60))
    (out / "genome.fa").write_text("\n".join(fasta_lines) + "\n")
    for stale in (out / "genome.fa.fai",):
        stale.unlink(missing_ok=True)

    # Artefact bins shared by all GC-biased tracks: P(artefact) rises steeply with the bin's GC.
    artefact_u = {chrom: rng.random(len(truth[f"gc/{chrom}"])) for chrom in chrom_names}
    tsv = ["id\tpeaks\tbiosample\torgan\tlife_stage\ttarget\tassay\tlab\trelease_date\tread_depth\treplicates"]
    track_truth: dict[str, dict] = {}
    for i, (biosample, target, lab, assay, year, reps) in enumerate(TRACKS):
        track_id = f"DEMO{i + 1:03d}"
        depth = LAB_DEPTH[(lab, assay)]
        activity = ACTIVITY[biosample].get(target, 0.0)
        peaks: list[tuple[str, int, int, float]] = []
        tf_sites = sites[target]
        strengths = np.array([s[3] for s in tf_sites])
        threshold = np.quantile(strengths, 1 - depth)
        n_bound = 0
        for ci, b, centre, strength, occupancy in tf_sites:
            if occupancy < activity and strength >= threshold:
                half = int(rng.integers(20, 45))
                end = min(centre + half, spec.chromosomes[chrom_names[ci]])
                peaks.append((chrom_names[ci], max(centre - half, 0), end, float(strength)))
                n_bound += 1
        n_artefacts = 0
        for chrom in chrom_names:
            gc = truth[f"gc/{chrom}"]
            p_false = np.full(len(gc), FALSE_PEAK_RATE)
            if lab in GC_BIASED_LABS:
                p_false = p_false + GC_BIAS_MAX / (1 + np.exp(-(gc - GC_BIAS_CENTRE) / GC_BIAS_SCALE))
                artefact = artefact_u[chrom] < p_false
            else:
                artefact = rng.random(len(gc)) < p_false
            for b in np.flatnonzero(artefact):
                centre = b * BIN + BIN // 2
                peaks.append((chrom, centre - 30, centre + 30, float(rng.uniform(2, 6))))
            n_artefacts += int(artefact.sum())
        peaks.sort(key=lambda p: (chrom_names.index(p[0]), p[1]))
        with open(out / "peaks" / f"{track_id}.narrowPeak", "w") as handle:
            for j, (chrom, start, end, signal) in enumerate(peaks):
                score = int(min(1000, 100 * signal))
                handle.write(f"{chrom}\t{start}\t{end}\t{track_id}_peak{j}\t{score}\t.\t{signal:.3f}\t"
                             f"{signal * 2:.3f}\t{signal * 1.5:.3f}\t{(end - start) // 2}\n")
        organ, life_stage = BIOSAMPLES[biosample]
        read_depth = round(20 + 40 * depth + rng.normal(0, 2), 1)
        tsv.append(f"{track_id}\tpeaks/{track_id}.narrowPeak\t{biosample}\t{organ}\t{life_stage}\t{target}\t{assay}\t"
                   f"{lab}\t{year}-0{1 + i % 9}-15\t{read_depth}\t{reps}")
        track_truth[track_id] = {
            "biosample": biosample, "target": target, "lab": lab, "assay": assay, "depth": depth,
            "gc_biased": lab in GC_BIASED_LABS, "activity": activity, "bound_peaks": n_bound,
            "artefact_peaks": n_artefacts, "motif": JASPAR[target][0],
        }
    (out / "tracks.tsv").write_text("\n".join(tsv) + "\n")
    np.savez_compressed(out / "truth.npz", **truth)
    (out / "truth.json").write_text(json.dumps({
        "seed": spec.seed, "bin_size": BIN, "chromosomes": spec.chromosomes, "tfs": tfs,
        "jaspar": {tf: JASPAR[tf][0] for tf in tfs}, "activity": ACTIVITY,
        "gc_bias": {"labs": sorted(GC_BIASED_LABS), "max": GC_BIAS_MAX, "centre": GC_BIAS_CENTRE,
                    "scale": GC_BIAS_SCALE},
        "tracks": track_truth,
    }, indent=2) + "\n")
    shutil.copyfile(TEMPLATE, out / "config.yaml")
    shutil.copyfile(MAPPING_TEMPLATE, out / "mapping.yaml")
    return out
