"""`python -m service.batch variants` on users' files as the field's tools write them (issue 17): one file per
convention, written as VCF text and compressed/converted by bgzip, gzip, tabix and `bcftools view -Ob`:

- a GATK-style gVCF (v4.2, `<NON_REF>`, reference blocks with END, AD/PL genotypes), BGZF + tabix;
- a bcftools-style multi-allelic call set (v4.2, several samples, `*` spanning deletions), plain text, and the
  same file as BCF (named `.dat`, so the format must come from the content);
- a population-release-style sites-only file (v4.1, no `##contig` lines, `chr` names, a contig the FASTA lacks,
  lower-case and `N` REF), compressed with plain `gzip`, scored against a chr-less (`1`, `MT`) renamed FASTA;
- a structural-variant file (v4.3, `<DEL>` with END, `<*>`, breakends, missing ALT `.`), BGZF without index.

Each output is read back with `bcftools query` (records, order, genotypes identical) and pysam (Number=A fields,
MFD_ERROR per allele, counts in the summary). Bad inputs exit 2 with one line and leave no output. The genome is
the tiny demo genome (training.data.demo_genome) with a chrM, a soft-masked stretch and an IUPAC code added.
"""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pysam
import pytest

from bench.synthetic_vcf import read_fasta
from tests.test_batch_variants import batch

ONE = ["--shifts", "1", "--strands", "1", "--conditions", "ENCFF002"]
#: chr1 is soft-masked over [MASK_START, MASK_END) and chr2 holds an IUPAC code (R) at IUPAC_POS (1-based).
MASK_START, MASK_END, IUPAC_POS = 6000, 6400, 9000


def _other(base: str) -> str:
    return "A" if base.upper() != "A" else "C"


def _write_fasta(path: Path, sequences: dict[str, str]) -> None:
    with open(path, "w") as handle:
        for name, seq in sequences.items():
            handle.write(f">{name}\n")
            handle.writelines(seq[i:i + 60] + "\n" for i in range(0, len(seq), 60))


def _run(*cmd: str) -> str:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def corpus(tiny_demo_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vcf_corpus")
    seqs = read_fasta(tiny_demo_dir / "genome.fa")
    seqs["chrM"] = seqs["chr4"][:4000][::-1]
    c1 = seqs["chr1"]
    seqs["chr1"] = c1[:MASK_START] + c1[MASK_START:MASK_END].lower() + c1[MASK_END:]
    c2 = seqs["chr2"]
    seqs["chr2"] = c2[:IUPAC_POS - 1] + "R" + c2[IUPAC_POS:]
    _write_fasta(root / "genome.fa", seqs)
    (root / "ensembl").mkdir()
    renamed = {("MT" if k == "chrM" else k[3:]): v for k, v in seqs.items()}
    _write_fasta(root / "ensembl" / "genome.fa", renamed)
    upper = {k: v.upper() for k, v in seqs.items()}
    c1, c2, cm = upper["chr1"], upper["chr2"], upper["chrM"]
    snv = (3001, c1[3000], _other(c1[3000]))  # the same SNV in every file: its effect must agree everywhere

    contigs = "".join(f"##contig=<ID={k},length={len(v)}>\n" for k, v in seqs.items())
    # GATK HaplotypeCaller -ERC GVCF style
    gvcf = ("##fileformat=VCFv4.2\n"
            '##ALT=<ID=NON_REF,Description="Represents any possible alternative allele at this location">\n'
            '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">\n'
            '##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth">\n'
            '##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype Quality">\n'
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
            '##FORMAT=<ID=MIN_DP,Number=1,Type=Integer,Description="Minimum DP observed within the GVCF block">\n'
            '##FORMAT=<ID=PL,Number=G,Type=Integer,Description="Phred-scaled genotype likelihoods">\n'
            "##GVCFBlock0-1=minGQ=0(inclusive),maxGQ=1(exclusive)\n"
            '##INFO=<ID=END,Number=1,Type=Integer,Description="Stop position of the interval">\n'
            + contigs +
            "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tNA12878\n"
            f"chr1\t2001\t.\t{c1[2000]}\t<NON_REF>\t.\t.\tEND=3000\tGT:DP:GQ:MIN_DP:PL\t0/0:31:90:28:0,90,1350\n"
            f"chr1\t{snv[0]}\t.\t{snv[1]}\t{snv[2]},<NON_REF>\t512.6\t.\t.\tGT:AD:DP:GQ:PL\t"
            "0/1:12,14,0:26:99:541,0,402,577,444,1021\n"
            f"chr1\t3002\t.\t{c1[3001]}\t<NON_REF>\t.\t.\tEND=3500\tGT:DP:GQ:MIN_DP:PL\t0/0:25:60:20:0,60,900\n")
    (root / "gvcf.vcf").write_text(gvcf)
    _run("bgzip", "-f", str(root / "gvcf.vcf"))
    _run("tabix", "-p", "vcf", str(root / "gvcf.vcf.gz"))

    # bcftools call + norm -m+ style: multi-allelic, several samples, a spanning deletion
    multi = ("##fileformat=VCFv4.2\n##FILTER=<ID=PASS,Description=\"All filters passed\">\n"
             "##source=bcftools_callV1.16\n" + contigs +
             '##INFO=<ID=DP,Number=1,Type=Integer,Description="Raw read depth">\n'
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
             '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">\n'
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2\tS3\n"
             f"chr1\t{snv[0]}\trs1\t{snv[1]}\t{snv[2]}\t50\tPASS\tDP=30\tGT:AD\t0/1:5,6\t0/0:9,0\t1/1:0,8\n"
             f"chr1\t4001\trs2\t{c1[4000]}\t{','.join(b for b in 'ACGT' if b != c1[4000])}\t60\tPASS\tDP=40\t"
             "GT:AD\t1/2:0,4,5,0\t0/3:5,0,0,4\t./.:.\n"
             f"chr1\t4500\t.\t{c1[4499:4503]}\t{c1[4499]},*\t70\tPASS\tDP=22\tGT:AD\t1|2:0,3,4\t0|1:5,5,0\t0/0:8,0,0\n"
             f"chr2\t5001\trs3\t{c2[5000]}\t{c2[5000]}TT\t40\tPASS\tDP=12\tGT:AD\t0/1:4,4\t0/1:3,3\t0/0:6,0\n")
    (root / "multi.vcf").write_text(multi)
    _run("bcftools", "view", "-Ob", "-o", str(root / "multi.dat"), str(root / "multi.vcf"))

    # population release: sites only, VCF 4.1, no contig lines, plain gzip
    sites = ("##fileformat=VCFv4.1\n##reference=GRCh38\n"
             '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency">\n'
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
             f"chr1\t{snv[0]}\t.\t{snv[1]}\t{snv[2]}\t.\tPASS\tAF=0.01\n"
             f"chr1\t{MASK_START + 101}\t.\t{c1[MASK_START + 100].lower()}\t{_other(c1[MASK_START + 100])}\t.\t"
             "PASS\tAF=0.2\n"
             f"chr2\t{IUPAC_POS}\t.\tN\tA\t.\tPASS\tAF=0.001\n"
             f"chrM\t2001\t.\t{cm[2000]}\t{_other(cm[2000])}\t.\tPASS\tAF=0.5\n"
             "chrUn_KI270302v1\t1001\t.\tA\tG\t.\tPASS\tAF=0.3\n"
             f"chr3\t5001\t.\t{upper['chr3'][5000]}\t{','.join(b for b in 'ACGT' if b != upper['chr3'][5000])[:3]}"
             "\t.\tPASS\tAF=0.1,0.2\n")
    with gzip.open(root / "sites.vcf.gz", "wt") as handle:  # what `gzip sites.vcf` writes
        handle.write(sites)

    # structural variants and everything that is not a sequence, VCF 4.3
    sv = ("##fileformat=VCFv4.3\n" + contigs +
          '##ALT=<ID=DEL,Description="Deletion">\n'
          '##INFO=<ID=END,Number=1,Type=Integer,Description="End position">\n'
          '##INFO=<ID=SVLEN,Number=A,Type=Integer,Description="Length">\n'
          '##INFO=<ID=SVTYPE,Number=1,Type=String,Description="Type">\n'
          '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
          "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n"
          f"chr1\t5001\tdel1\t{c1[5000]}\t<DEL>\t.\tPASS\tSVTYPE=DEL;END=5300;SVLEN=-300\tGT\t0/1\n"
          f"chr1\t7001\tbnd1\t{c1[7000]}\t{c1[7000]}]chr2:5000]\t.\tPASS\tSVTYPE=BND\tGT\t0/1\n"
          f"chr1\t7501\tnone\t{c1[7500]}\t.\t.\tPASS\t.\tGT\t0/0\n"
          f"chr1\t8001\tany\t{c1[8000]}\t{_other(c1[8000])},<*>\t.\tPASS\t.\tGT\t0/1\n")
    (root / "sv.vcf").write_text(sv)
    _run("bgzip", "-f", str(root / "sv.vcf"))
    return {"root": root, "snv": snv}


def _score(corpus, name: str, repository: Path, out_name: str, fasta: str = "genome.fa"):
    root = corpus["root"]
    out = root / out_name
    result = batch(["variants", root / name, "--fasta", root / fasta, *ONE, "--out", out,
                    "--records-per-shard", "2"], repository)
    return out, json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def _query(path: Path, fmt: str) -> list[str]:
    return _run("bcftools", "query", "-f", fmt, str(path)).splitlines()


def _effects(out: Path) -> dict[tuple, tuple]:
    with pysam.VariantFile(str(out)) as vcf:
        assert vcf.header.info["MFD_ENCFF002_DLOGIT"].number == "A"
        return {(r.chrom, r.pos, r.ref, r.alts): (r.info.get("MFD_ENCFF002_DLOGIT"), r.info.get("MFD_ERROR"))
                for r in vcf}


@pytest.fixture(scope="module")
def runs(corpus, exported_repository):
    return {
        "gvcf": _score(corpus, "gvcf.vcf.gz", exported_repository, "gvcf.out.vcf.gz"),
        "bcf": _score(corpus, "multi.dat", exported_repository, "multi.out.bcf"),
        "multi": _score(corpus, "multi.vcf", exported_repository, "multi.out.vcf.gz"),
        "sites": _score(corpus, "sites.vcf.gz", exported_repository, "sites.out.vcf.gz", "ensembl/genome.fa"),
        "sv": _score(corpus, "sv.vcf.gz", exported_repository, "sv.out.vcf"),
    }


def test_gvcf_reference_blocks_and_genotypes(corpus, runs):
    out, summary, _ = runs["gvcf"]
    source = corpus["root"] / "gvcf.vcf.gz"
    fmt = "%CHROM\t%POS\t%REF\t%ALT\t%INFO/END[\t%GT\t%AD\t%DP\t%GQ\t%PL]\n"
    assert _query(out, fmt) == _query(source, fmt)
    assert (out.parent / (out.name + ".tbi")).exists()
    assert summary["input_format"] == "bgzf" and not summary["input_rewritten"]
    assert summary["errors"] == {"reference_block": 3} and summary["alleles"] == 4 and summary["scored"] == 1
    effects = list(_effects(out).values())
    assert effects[0] == ((None,), ("reference_block",))
    assert effects[1][0][0] is not None and effects[1][0][1] is None
    assert effects[1][1] == (".", "reference_block")


def test_multiallelic_text_and_bcf_agree(corpus, runs):
    out_vcf, summary, _ = runs["multi"]
    out_bcf, bcf_summary, _ = runs["bcf"]
    source = corpus["root"] / "multi.vcf"
    fmt = "%CHROM\t%POS\t%ID\t%REF\t%ALT\t%QUAL\t%FILTER\t%DP[\t%GT:%AD]\n"
    assert _query(out_vcf, fmt) == _query(out_bcf, fmt) == _query(source, fmt)
    assert bcf_summary["input_format"] == "bcf" and summary["input_format"] == "vcf"
    assert _run("bcftools", "view", "-h", str(out_bcf)).startswith("##fileformat")  # really BCF, indexed
    assert (out_bcf.parent / (out_bcf.name + ".csi")).exists()
    assert summary["errors"] == bcf_summary["errors"] == {"spanning_deletion": 1}
    assert summary["alleles"] == 7 and summary["scored"] == 6
    vcf_effects, bcf_effects = _effects(out_vcf), _effects(out_bcf)
    assert vcf_effects.keys() == bcf_effects.keys()
    for key, (values, errors) in vcf_effects.items():
        assert bcf_effects[key][0] == pytest.approx(values)
        assert len(values) == len(key[3])  # Number=A: one per ALT
    multi = vcf_effects[next(k for k in vcf_effects if k[1] == 4001)][0]
    assert len(set(multi)) == 3 and None not in multi  # three different ALTs, three different effects


def test_plain_gzip_sites_without_contigs_on_renamed_fasta(corpus, runs):
    out, summary, stderr = runs["sites"]
    source = corpus["root"] / "sites.vcf.gz"
    assert summary["input_format"] == "gzip" and summary["input_rewritten"]
    assert "plain gzip (not BGZF) recompressed to BGZF" in stderr and "##contig" in stderr
    with gzip.open(source, "rt") as handle:
        rows = [line.split("\t")[:5] for line in handle if not line.startswith("#")]
    assert [r.split("\t") for r in _query(out, "%CHROM\t%POS\t%ID\t%REF\t%ALT\n")] == rows
    assert _query(out, "%AF\n") == ["0.01", "0.2", "0.001", "0.5", "0.3", "0.1,0.2"]
    with pysam.VariantFile(str(out)) as vcf:
        assert vcf.header.contigs["chr1"].length == 32000 and "chrUn_KI270302v1" in vcf.header.contigs
        records = list(vcf)
    assert [r.info.get("MFD_ERROR") for r in records] == [None, None, None, None, ("unknown_chrom",), None]
    assert records[1].ref == records[1].ref.lower()  # lower-case REF kept as written, scored as upper case
    assert all(v is not None for r in records if r.chrom != "chrUn_KI270302v1"
               for v in r.info["MFD_ENCFF002_DLOGIT"])
    assert summary["errors"] == {"unknown_chrom": 1} and summary["alleles"] == 7 and summary["scored"] == 6


def test_same_snv_same_effect_across_formats_and_naming(corpus, runs):
    pos, ref, alt = corpus["snv"]
    values = []
    for name in ("gvcf", "multi", "bcf", "sites"):
        effects = _effects(runs[name][0])
        key = next(k for k in effects if k[0] == "chr1" and k[1] == pos)
        values.append(effects[key][0][key[3].index(alt)])
    assert values[0] is not None and values == pytest.approx([values[0]] * 4, abs=1e-6)


def test_symbolic_breakend_and_missing_alt(corpus, runs):
    out, summary, _ = runs["sv"]
    source = corpus["root"] / "sv.vcf.gz"
    fmt = "%CHROM\t%POS\t%ID\t%REF\t%ALT\t%INFO/END\t%SVLEN[\t%GT]\n"
    assert _query(out, fmt) == _query(source, fmt)
    assert summary["errors"] == {"symbolic_allele": 1, "breakend": 1, "missing_alt": 1, "reference_block": 1}
    assert summary["scored"] == 1
    with pysam.VariantFile(str(out)) as vcf:
        errors = {r.id: r.info.get("MFD_ERROR") for r in vcf}
    assert errors == {"del1": ("symbolic_allele",), "bnd1": ("breakend",), "none": ("missing_alt",),
                      "any": (".", "reference_block")}


def _fails(corpus, repository, vcf: Path, fasta: Path, out: Path) -> str:
    result = batch(["variants", vcf, "--fasta", fasta, *ONE, "--out", out], repository, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))
    return result.stderr.strip().splitlines()[-1]


def test_bad_inputs_exit_2_with_one_line(corpus, exported_repository, tmp_path):
    root, fasta = corpus["root"], corpus["root"] / "genome.fa"
    short = tmp_path / "short.vcf"
    lines = (root / "multi.vcf").read_text().splitlines()
    lines[-2] = "\t".join(lines[-2].split("\t")[:5])
    short.write_text("\n".join(lines) + "\n")
    message = _fails(corpus, exported_repository, short, fasta, tmp_path / "o1.vcf.gz")
    assert f"{short}:{len(lines) - 1}:" in message and "columns" in message
    truncated = tmp_path / "cut.vcf.gz"
    data = (root / "sites.vcf.gz").read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    assert "corrupt" in _fails(corpus, exported_repository, truncated, fasta, tmp_path / "o2.vcf.gz")
    text = tmp_path / "notes.vcf"
    text.write_text("hello\tworld\n")
    assert f"{text}:1: not a VCF" in _fails(corpus, exported_repository, text, fasta, tmp_path / "o3.vcf.gz")
    gz_fasta = tmp_path / "genome.fa.gz"
    with open(fasta, "rb") as src, gzip.open(gz_fasta, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert "bgzip" in _fails(corpus, exported_repository, root / "multi.vcf", gz_fasta, tmp_path / "o4.vcf.gz")


def test_bgzf_fasta_with_fai_and_gzi(corpus):
    from service.core.genome import Genome

    root = corpus["root"]
    shutil.copy(root / "genome.fa", root / "bgzf.fa")
    _run("bgzip", "-f", "-i", str(root / "bgzf.fa"))  # writes bgzf.fa.gz and its .gzi
    bgzf, plain = Genome(root / "bgzf.fa.gz"), Genome(root / "genome.fa")
    try:
        assert bgzf.lengths == plain.lengths
        assert (root / "bgzf.fa.gz.fai").exists()
        masked = bgzf.fetch("chr1", MASK_START - 5, MASK_START + 5, field="t")
        assert masked == masked.upper() == plain.fetch("chr1", MASK_START - 5, MASK_START + 5, field="t")
        assert bgzf.fetch("2", IUPAC_POS - 2, IUPAC_POS + 1, field="t")[1] == "N"
        assert plain.fetch("chr2", IUPAC_POS - 1, IUPAC_POS, field="t") == "N"
        assert bgzf.fetch("MT", 100, 200, field="t") == plain.fetch("chrM", 100, 200, field="t")
    finally:
        bgzf.close()
        plain.close()
