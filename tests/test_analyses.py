"""The paper's downstream analyses as commands (issue 18, item 6 b and c), on fixtures with planted truth.

The model is the bundled one (model_repository/, trained on the demo data); the genome is the tiny demo genome
(`tiny_demo_dir`, seed 1: other sequences than the model was trained on, the same planted JASPAR motifs), whose
`truth.npz` says which 128-bp bins hold a motif pair and each bin's GC.

- (c) rare variants: "rare" SNVs (AF < 0.005) each break the most informative base of a planted motif instance
  (found by scanning the bin with the motif's log-odds matrix); "common" SNVs (AF 0.05–0.5) sit at random in
  motif-free bins. Planted: large biological effects are enriched among the rare ones, far more than technical
  ones. Measured (40 rare, 160 common, quantile 0.8): bio odds ratio ~60, tech ~9. Swapping the frequencies
  (rare = background) must flip the enrichment below 1.
- (b) enhancers (60 + 60 regions): positives = motif bins, negatives = motif-free bins (GC unrelated to the
  label) → f_bio predicts the label (measured AUROC 0.88 with GC regressed out), GC alone hardly (0.58). A second
  BED whose negatives are GC-rich motif-free bins makes GC a confounder (GC alone 0.91): regressing GC out must
  take the k-mer baseline's AUROC down (0.91 → 0.43) while f_bio keeps predictive power (0.70). On the demo model f_tech predicts motif
  regions about as well as f_bio: the demo's technical effect "peak depth" depends on motif strength, so the demo
  cannot show f_bio > f_tech here, and the test does not claim it.

The VCF is written as text and compressed and indexed with bcftools, as gnomAD-style users' files are.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.synthetic_vcf import read_fasta
from mfd_common.geometry import BIN_SIZE, WINDOW_BASES
from training import enhancer_prediction, rare_variant_enrichment
from training.data.demo_genome import BIN, JASPAR, pfm_probabilities

MARGIN_BINS = 20   # keep fixtures 2.5 kb away from chromosome ends


def _bins(demo: Path, keep) -> list[tuple[str, int]]:
    truth = np.load(demo / "truth.npz")
    chroms = json.loads((demo / "truth.json").read_text())["chromosomes"]
    return [(c, int(b)) for c in chroms
            for b in np.flatnonzero(keep(truth[f"motif/{c}"], truth[f"gc/{c}"]))
            if MARGIN_BINS <= b < len(truth[f"motif/{c}"]) - MARGIN_BINS]


def motif_breaking_snvs(demo: Path, n: int, seed: int = 0) -> list[tuple[str, int, str, str]]:
    """(chrom, 1-based pos, ref, alt): the most informative base of a planted motif instance, changed to the base
    the motif least expects."""
    seqs = {k: v.upper() for k, v in read_fasta(demo / "genome.fa").items()}
    motif = {c: np.load(demo / "truth.npz")[f"motif/{c}"] for c in seqs}
    tfs = list(JASPAR)
    codes = {b: i for i, b in enumerate("ACGT")}
    out = []
    candidates = _bins(demo, lambda m, g: m >= 0)
    for j in np.random.default_rng(seed).permutation(len(candidates))[:n]:
        chrom, b = candidates[j]
        probs = pfm_probabilities(JASPAR[tfs[motif[chrom][b]]][1])
        log_odds, width = np.log(probs / 0.25), len(probs)
        bases = np.array([codes.get(ch, 0) for ch in seqs[chrom][b * BIN:(b + 1) * BIN]])
        cols = np.arange(width)
        scored = [(log_odds[cols, bases[o:o + width]].sum(), o, False) for o in range(BIN - width + 1)]
        scored += [(log_odds[cols, (3 - bases[o:o + width])[::-1]].sum(), o, True) for o in range(BIN - width + 1)]
        _, offset, reverse = max(scored)
        column = int(np.argmax((probs * np.log2(probs / 0.25)).sum(axis=1)))
        pos = b * BIN + offset + (width - 1 - column if reverse else column)
        least = int(np.argmin(probs[column]))
        alt = "ACGT"[3 - least if reverse else least]
        if alt != seqs[chrom][pos]:
            out.append((chrom, pos + 1, seqs[chrom][pos], alt))
    return out


def background_snvs(demo: Path, n: int, seed: int = 1) -> list[tuple[str, int, str, str]]:
    seqs = {k: v.upper() for k, v in read_fasta(demo / "genome.fa").items()}
    rng = np.random.default_rng(seed)
    candidates = _bins(demo, lambda m, g: m < 0)
    out = []
    for j in rng.permutation(len(candidates))[:n]:
        chrom, b = candidates[j]
        pos = b * BIN + int(rng.integers(0, BIN))
        ref = seqs[chrom][pos]
        if ref in "ACGT":
            out.append((chrom, pos + 1, ref, "ACGT"[("ACGT".index(ref) + int(rng.integers(1, 4))) % 4]))
    return out


def write_vcf(path: Path, demo: Path, records: list[tuple[str, int, str, str, float]],
              af_header: str = '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency">\n') -> Path:
    """VCF text → `bcftools view -Oz` + `bcftools index` (sorted by the FASTA's contig order)."""
    seqs = read_fasta(demo / "genome.fa")
    order = {c: i for i, c in enumerate(seqs)}
    records = sorted(records, key=lambda r: (order[r[0]], r[1]))
    text = ("##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={k},length={len(v)}>\n" for k, v in seqs.items())
            + af_header + "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
            + "".join(f"{c}\t{p}\t.\t{r}\t{a}\t.\tPASS\tAF={af:.6g}\n" for c, p, r, a, af in records))
    plain = path.with_suffix("")
    plain.write_text(text)
    subprocess.run(["bcftools", "view", "-Oz", "-o", str(path), str(plain)], check=True, capture_output=True)
    subprocess.run(["bcftools", "index", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def planted_variants(tiny_demo_dir, tmp_path_factory):
    rng = np.random.default_rng(2)
    rare = motif_breaking_snvs(tiny_demo_dir, 40)
    common = background_snvs(tiny_demo_dir, 160)
    assert len(rare) >= 35 and len(common) >= 150
    return tiny_demo_dir, rare, common, rng.uniform(1e-5, 0.005, len(rare)), rng.uniform(0.05, 0.5, len(common))


def _table(out: Path) -> dict[tuple[str, float], dict]:
    return {(r["part"], r["quantile"]): r for r in json.loads(out.read_text())["rows"]}


def test_rare_variants_carry_the_large_biological_effects(planted_variants, tmp_path, capsys):
    demo, rare, common, rare_af, common_af = planted_variants
    records = ([(*v, af) for v, af in zip(rare, rare_af)] + [(*v, af) for v, af in zip(common, common_af)])
    vcf = write_vcf(tmp_path / "planted.vcf.gz", demo, records)
    out = tmp_path / "table.json"
    assert rare_variant_enrichment.main([str(vcf), "--fasta", str(demo / "genome.fa"), "--quantiles", "0.8",
                                         "--threads", "1", "--out", str(out)]) == 0
    rows = _table(out)
    summary = json.loads(out.read_text())
    assert summary["variants"] == len(records) and summary["rare"] == len(rare) and summary["skipped"] == {}
    bio, tech = rows[("bio", 0.8)], rows[("tech", 0.8)]
    assert bio["rare_large"] + bio["rare_small"] == len(rare)
    assert bio["odds_ratio"] > 15 and bio["p_value"] < 1e-10, bio          # measured ~60, p ~1e-20
    assert bio["odds_ratio"] > 3 * tech["odds_ratio"], (bio, tech)         # measured ~60 vs ~9
    assert "rare_below" in summary and capsys.readouterr().out.startswith("part\tquantile")

    # the control: the same variants with the frequencies swapped (rare = background SNVs)
    swapped = ([(*v, af) for v, af in zip(rare, common_af[:len(rare)])]
               + [(*v, af) for v, af in zip(common, np.resize(rare_af, len(common)))])
    vcf = write_vcf(tmp_path / "swapped.vcf.gz", demo, swapped)
    assert rare_variant_enrichment.main([str(vcf), "--fasta", str(demo / "genome.fa"), "--quantiles", "0.8",
                                         "--threads", "1", "--out", str(out)]) == 0
    assert _table(out)[("bio", 0.8)]["odds_ratio"] < 0.5


def test_rare_variants_skip_what_cannot_be_scored_and_count_it(planted_variants, tmp_path):
    demo, rare, common, rare_af, common_af = planted_variants
    records = [(*v, af) for v, af in zip(rare[:10], rare_af)] + [(*v, af) for v, af in zip(common[:30], common_af)]
    c, p, _, _ = common[0]
    vcf = write_vcf(tmp_path / "mixed.vcf.gz", demo, records)
    text = subprocess.run(["bcftools", "view", str(vcf)], capture_output=True, text=True, check=True).stdout
    seq = read_fasta(demo / "genome.fa")[c].upper()
    ref_at, ref_next = seq[p + 49], seq[p + 50]
    alts = ",".join(b for b in "ACGT" if b != ref_next)[:3]
    text += (f"{c}\t{p + 50}\t.\t{ref_at}\t<DEL>\t.\tPASS\tAF=0.3\n"                          # symbolic
             f"{c}\t{p + 50}\t.\t{'A' if ref_at != 'A' else 'C'}\tT\t.\tPASS\tAF=0.3\n"     # REF differs
             f"{c}\t{p + 51}\t.\t{ref_next}\t{alts}\t.\tPASS\tAF=0.2,.\n"  # multi-allelic, one AF missing
             f"chrUn\t100\t.\tA\tC\t.\tPASS\tAF=0.4\n")
    plain = tmp_path / "mixed_extra.vcf"
    plain.write_text(text)
    out = tmp_path / "t.json"
    assert rare_variant_enrichment.main([str(plain), "--fasta", str(demo / "genome.fa"), "--threads", "1",
                                         "--strands", "1", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["records"] == 40 + 4 and summary["variants"] == 40 + 1
    assert summary["skipped"]["REF or ALT not A/C/G/T (symbolic, *, N)"] == 1
    assert summary["skipped"]["REF differs from the FASTA"] == 1
    assert summary["skipped"]["no AF value"] == 1
    assert summary["skipped"]["contig not in the FASTA"] == 1


@pytest.mark.parametrize("case,fragment", [
    ("no_af", "INFO/AF is not declared"),
    ("all_common", "needs both rare and common"),
    ("missing", "does not exist"),
    ("bad_af", "is not a frequency in [0, 1]"),
    ("bad_condition", "--conditions"),
    ("bad_quantile", "--quantiles"),
])
def test_rare_variants_bad_input_exits_2_with_one_line(planted_variants, tmp_path, capsys, case, fragment):
    demo, rare, common, rare_af, common_af = planted_variants
    records = [(*v, 0.2) for v in common[:5]] + [(*v, 0.001) for v in rare[:5]]
    args = ["--fasta", str(demo / "genome.fa"), "--threads", "1"]
    if case == "no_af":
        vcf = write_vcf(tmp_path / "x.vcf.gz", demo, records, af_header="")
    elif case == "all_common":
        vcf = write_vcf(tmp_path / "x.vcf.gz", demo, [(*r[:4], 0.3) for r in records])
    elif case == "missing":
        vcf = tmp_path / "absent.vcf.gz"
    elif case == "bad_af":
        vcf = write_vcf(tmp_path / "x.vcf.gz", demo, records[:-1] + [(*records[-1][:4], 1.5)])
    else:
        vcf = write_vcf(tmp_path / "x.vcf.gz", demo, records)
        args += ["--conditions", "NOPE"] if case == "bad_condition" else ["--quantiles", "0.9,2"]
    capsys.readouterr()
    assert rare_variant_enrichment.main([str(vcf), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err, err


def write_bed(path: Path, positives: list[tuple[str, int]], negatives: list[tuple[str, int]]) -> Path:
    """Regions of two bins around each chosen bin, labelled as the authors' VISTA BED (column 5)."""
    rows = [(c, b, "positive") for c, b in positives] + [(c, b, "negative") for c, b in negatives]
    path.write_text("track name=planted\n" + "".join(f"{c}\t{b * BIN - 64}\t{b * BIN + 192}\telement{i}\t{label}\n"
                                                       for i, (c, b, label) in enumerate(rows)))
    return path


def _pick(items: list, n: int, seed: int) -> list:
    return [items[i] for i in np.random.default_rng(seed).permutation(len(items))[:n]]


def _auroc(out: Path) -> dict[str, dict]:
    return {r["features"]: r for r in json.loads(out.read_text())["rows"]}


def test_enhancer_prediction_recovers_motif_regions(tiny_demo_dir, tmp_path):
    demo = tiny_demo_dir
    positives = _pick(_bins(demo, lambda m, g: m >= 0), 60, 0)
    args = ["--fasta", str(demo / "genome.fa"), "--threads", "1", "--max-windows", "1"]

    bed = write_bed(tmp_path / "motifs.bed", positives, _pick(_bins(demo, lambda m, g: m < 0), 60, 1))
    out = tmp_path / "motifs.json"
    assert enhancer_prediction.main([str(bed), *args, "--out", str(out)]) == 0
    rows = _auroc(out)
    assert set(rows) == {"f_bio", "f_tech", "f_all", "kmer3", "gc_content"}
    assert rows["f_bio"]["auroc_gc_regressed"] > 0.75, rows       # measured 0.88
    assert 0.25 < rows["gc_content"]["auroc_raw"] < 0.75, rows    # GC does not carry these labels (0.58)

    # GC as a confounder: negatives are GC-rich motif-free bins
    bed = write_bed(tmp_path / "gc.bed", positives, _pick(_bins(demo, lambda m, g: (m < 0) & (g > 0.6)), 60, 2))
    assert enhancer_prediction.main([str(bed), *args, "--out", str(out)]) == 0
    rows = _auroc(out)
    assert rows["gc_content"]["auroc_raw"] > 0.8, rows            # measured 0.91
    assert rows["kmer3"]["auroc_raw"] - rows["kmer3"]["auroc_gc_regressed"] > 0.3, rows    # 0.91 → 0.43
    assert rows["f_bio"]["auroc_gc_regressed"] > 0.6, rows        # measured 0.70
    assert rows["f_bio"]["auroc_gc_regressed"] > rows["kmer3"]["auroc_gc_regressed"] + 0.15, rows


@pytest.mark.parametrize("content,fragment", [
    ("chr1\t100\n", "columns"),
    ("chr1\tx\t300\tr\t1\n", "start/end must be integers"),
    ("chrZ\t100\t300\tr\t1\n", "not in the FASTA"),
    ("chr1\t300\t100\tr\t1\n", "empty or outside"),
    ("chr1\t100\t300\tr\tmaybe\n", "label 'maybe'"),
    ("chr1\t100\t300\tr\t1\nchr1\t400\t600\tr\t1\n", "both classes"),
])
def test_enhancer_bad_bed_exits_2_with_one_line(tiny_demo_dir, tmp_path, capsys, content, fragment):
    bed = tmp_path / "bad.bed"
    bed.write_text(content)
    assert enhancer_prediction.main([str(bed), "--fasta", str(tiny_demo_dir / "genome.fa")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: BED: ") and fragment in err and "\n" not in err, err


def test_region_pieces_and_allele_windows_are_centred(tiny_demo_dir):
    """The authors' tiling (an odd number of 128-bp pieces around the centre) and the variant windows (the
    variant's first base at index L // 2; alt differs from ref there only, for an SNV; N past the chromosome)."""
    from training.evaluation.enhancer_prediction import piece_centres
    from training.evaluation.exported_model import Reference
    from training.evaluation.rare_variant_enrichment import allele_windows

    assert piece_centres(0, 100, 9) == [50]
    assert piece_centres(0, 1000, 9) == [500 + BIN_SIZE * k for k in range(-3, 4)]
    assert len(piece_centres(0, 5000, 9)) == 9
    reference = Reference(tiny_demo_dir / "genome.fa")
    chrom = next(iter(reference.sizes))
    seq = read_fasta(tiny_demo_dir / "genome.fa")[chrom].upper()
    pos0, length = 5000, WINDOW_BASES
    alt = "A" if seq[pos0] != "A" else "C"
    ref_tokens, alt_tokens = allele_windows(reference, chrom, pos0, seq[pos0], alt, length)
    assert "ACGTN"[ref_tokens[length // 2]] == seq[pos0] and "ACGTN"[alt_tokens[length // 2]] == alt
    assert np.flatnonzero(ref_tokens != alt_tokens).tolist() == [length // 2]
    assert "".join("ACGTN"[t] for t in ref_tokens) == seq[pos0 - length // 2:pos0 - length // 2 + length]
    edge = reference.window(chrom, 10, 41)   # 10 bases before the chromosome start are N
    assert "".join("ACGTN"[t] for t in edge) == "N" * 10 + seq[:31]
