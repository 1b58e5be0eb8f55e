"""`python -m service.batch variants` on real files: a bgzipped VCF written by pysam (chromosomes named `1`, the
FASTA says `chr1`), read back by pysam and by Debian's `bcftools view`; effects checked against every crop scored
independently; bad alleles reported and counted; shards resume; a failing run leaves no output."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest

from tests.fixtures.service import REPO_ROOT, write_genome
from tests.fixtures.variant_effects import expected_effect

CONDITIONS = ["ENCFF002", 'never={"biosample": "GM12878", "target": "CTCF", "lab": "lab-A"}']
CONDITION_VALUES = ["ENCFF002", {"biosample": "GM12878", "target": "CTCF", "lab": "lab-A"}]


def alt_for(base: str) -> str:
    return "A" if base != "A" else "C"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch_variants")
    genome = write_genome(root / "genome.fa", {"chr1": 12000, "chr2": 6000}, seed=11)
    c1 = genome.sequences["chr1"]
    header = pysam.VariantHeader()
    for name, length in (("1", 12000), ("2", 6000)):
        header.contigs.add(name, length=length)
    header.info.add("AF", "A", "Float", "allele frequency")
    header.info.add("END", 1, "Integer", "end of a symbolic allele")
    header.add_sample("S1")
    header.formats.add("GT", 1, "String", "Genotype")
    records = [  # (chrom, pos, id, ref, alts, expected error codes per allele)
        ("1", 3000, "snv", c1[2999], (alt_for(c1[2999]),), [""]),
        ("1", 3500, "multi", c1[3499], tuple(b for b in "ACGT" if b != c1[3499])[:2], ["", ""]),
        ("1", 4000, "del", c1[3999:4004], (c1[3999],), [""]),
        ("1", 4500, "ins_sym", c1[4499], (c1[4499] + "GG", "<DUP>"), ["", "symbolic_allele"]),
        ("1", 5000, "wrongref", alt_for(c1[4999]), ("T" if c1[4999] != "T" else "G",), ["ref_mismatch"]),
        ("1", 50, "edge", c1[49], (alt_for(c1[49]),), ["near_edge"]),
        ("2", 3000, "other_chrom", genome.sequences["chr2"][2999], ("N",), [""]),
    ]
    path = root / "in.vcf.gz"
    with pysam.VariantFile(str(path), "wz", header=header) as out:
        for chrom, pos, vid, ref, alts, _ in records:
            symbolic = any(a.startswith("<") for a in alts)  # END: 100 bp for the symbolic allele
            rec = out.new_record(contig=chrom, start=pos - 1, stop=pos + 100 if symbolic else pos - 1 + len(ref),
                                 alleles=(ref, *alts), id=vid)
            rec.info["AF"] = tuple(0.1 for _ in alts)
            rec.samples["S1"]["GT"] = (0, 1)
            out.write(rec)
    return {"root": root, "genome": genome, "vcf": path, "records": records}


def batch(args: list, repository: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "MFD_TORCH_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "service.batch", *map(str, args), "--model-repository",
                             str(repository), "--no-progress"], capture_output=True, text=True, env=env,
                            cwd=REPO_ROOT, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def scored(inputs, exported_repository):
    out = inputs["root"] / "out.vcf.gz"
    result = batch(["variants", inputs["vcf"], "--fasta", inputs["genome"].path, "--conditions", *CONDITIONS,
                    "--out", out, "--records-per-shard", "3", "--shifts", "3"], exported_repository)
    return out, json.loads(result.stdout.strip().splitlines()[-1])


def test_output_is_the_input_with_declared_info_fields(inputs, scored):
    out, summary = scored
    view = subprocess.run(["bcftools", "view", "-H", str(out)], capture_output=True, text=True, check=True)
    assert len(view.stdout.strip().splitlines()) == len(inputs["records"])
    subprocess.run(["bcftools", "view", "-Ob", "-o", str(out.with_suffix(".bcf")), str(out)], check=True)
    with pysam.VariantFile(str(inputs["vcf"])) as vin, pysam.VariantFile(str(out)) as vout:
        for key in ("MFD_ENCFF002_DLOGIT", "MFD_never_DPROB", "MFD_never_DBIO", "MFD_never_DTECH", "MFD_ERROR"):
            assert key in vout.header.info, key
        assert vout.header.info["MFD_never_DLOGIT"].number == "A"
        assert list(vout.header.samples) == ["S1"]
        pairs = list(zip(vin, vout))
    assert len(pairs) == len(inputs["records"])
    for (a, b), (*_, codes) in zip(pairs, inputs["records"]):
        assert (a.chrom, a.pos, a.id, a.alleles, a.info["AF"]) == (b.chrom, b.pos, b.id, b.alleles, b.info["AF"])
        assert b.samples["S1"]["GT"] == a.samples["S1"]["GT"] == (0, 1) and a.stop == b.stop
        logits = b.info["MFD_ENCFF002_DLOGIT"]
        assert [v is None for v in logits] == [bool(c) for c in codes], (b.id, logits)
        if any(codes):
            assert b.info["MFD_ERROR"] == tuple(c or "." for c in codes)
    assert summary["errors"] == {"symbolic_allele": 1, "ref_mismatch": 1, "near_edge": 1}
    assert summary["alleles"] == 9 and summary["scored"] == 6
    report = Path(summary["error_report"]).read_text().splitlines()
    assert len(report) == 4 and "does not match the genome" in report[2] and "edge" in report[3]


def test_effects_equal_independent_ensembles(inputs, scored, torchscript_reference):
    out, _ = scored
    c1 = inputs["genome"].sequences["chr1"]
    with pysam.VariantFile(str(out)) as vout:
        records = {r.id: r for r in vout}
    for vid, allele in (("snv", 0), ("multi", 1), ("del", 0), ("ins_sym", 0)):
        rec = records[vid]
        expected = expected_effect(torchscript_reference, c1, rec.pos, rec.ref, rec.alts[allele], CONDITION_VALUES,
                                   shifts=3)  # 7 x 2 (the default) is checked in test_variants_effects
        for k, name in enumerate(("ENCFF002", "never")):
            assert rec.info[f"MFD_{name}_DLOGIT"][allele] == pytest.approx(expected["logit"][k], abs=1e-4)
            assert rec.info[f"MFD_{name}_DBIO"][allele] == pytest.approx(expected["logit_bio"][k], abs=1e-4)
            assert rec.info[f"MFD_{name}_DPROB"][allele] == pytest.approx(expected["probability"][k], abs=1e-5)


def test_shards_resume_and_merge_like_one_run(inputs, scored, exported_repository):
    out, _ = scored
    work, parallel = inputs["root"] / "work", inputs["root"] / "parallel.tsv"
    common = ["variants", inputs["vcf"], "--fasta", inputs["genome"].path, "--conditions", *CONDITIONS, "--out",
              parallel, "--records-per-shard", "3", "--work", work, "--shard-count", "2", "--shifts", "3"]
    first = json.loads(batch([*common, "--shard-index", "1", "--no-merge"], exported_repository).stdout)
    assert first["shards_computed"] == 1 and sorted(p.name for p in work.glob("shard-*")) == ["shard-000001.npz"]
    early = batch([*common, "--merge-only"], exported_repository, check=False)
    assert early.returncode == 2 and "not computed yet" in early.stderr and not parallel.exists()
    # A crash after shard 1: rerunning process 0 computes only its own shards (0 and 2), then merging works.
    second = json.loads(batch([*common, "--shard-index", "0", "--no-merge"], exported_repository).stdout)
    assert second["shards_computed"] == 2
    again = json.loads(batch([*common, "--shard-index", "0"], exported_repository).stdout)
    assert again["shards_computed"] == 0 and again["scored"] == 6
    rows = [line.split("\t") for line in parallel.read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    column = header.index("ENCFF002.delta_logit")
    with pysam.VariantFile(str(out)) as vout:
        single = [v for r in vout for v in r.info["MFD_ENCFF002_DLOGIT"]]
    assert [r[column] for r in rows] == ["NA" if v is None else f"{v:.6g}" for v in single]
    assert not work.exists()


def test_fail_mode_names_the_record_and_writes_nothing(inputs, exported_repository):
    out = inputs["root"] / "fail.vcf.gz"
    result = batch(["variants", inputs["vcf"], "--fasta", inputs["genome"].path, "--conditions", "ENCFF001",
                    "--out", out, "--on-error", "fail", "--shifts", "1", "--strands", "1"], exported_repository,
                   check=False)
    assert result.returncode == 2, result.stderr
    assert "record 4" in result.stderr and "<DUP>" in result.stderr
    assert not out.exists() and not list(out.parent.glob(".fail.vcf.gz*"))
    bad = batch(["variants", inputs["vcf"], "--fasta", inputs["genome"].path, "--conditions", "K999",
                 "--out", out], exported_repository, check=False)
    assert bad.returncode == 2 and "unknown track id 'K999'" in bad.stderr and not out.exists()


def test_model_picks_one_model_of_a_folder_of_models(inputs, scored, exported_repository, tmp_path):
    """`--model` in a folder of models (docs/multi-model.md): the named model's effects, as its own repository
    gives them; an unknown name, or several models without a default, exit 2 with one line naming the models."""
    models = tmp_path / "models"
    for name in ("tiny-a", "tiny-b"):
        shutil.copytree(exported_repository, models / name)
    out = tmp_path / "b.vcf.gz"
    batch(["variants", inputs["vcf"], "--fasta", inputs["genome"].path, "--conditions", *CONDITIONS, "--out", out,
           "--records-per-shard", "3", "--shifts", "3", "--model", "tiny-b"], models)
    with pysam.VariantFile(str(scored[0])) as single, pysam.VariantFile(str(out)) as named:
        for a, b in zip(single, named, strict=True):
            assert a.info.get("MFD_never_DLOGIT") == b.info.get("MFD_never_DLOGIT"), a.id
    for extra, fragment in (([], "no default (MFD_DEFAULT_MODEL): name one of tiny-a, tiny-b"),
                            (["--model", "hg19"], "unknown model 'hg19'; this deployment serves tiny-a, tiny-b")):
        result = batch(["variants", inputs["vcf"], "--fasta", inputs["genome"].path, "--conditions", *CONDITIONS,
                        "--out", tmp_path / "x.vcf.gz", *extra], models, check=False)
        assert result.returncode == 2 and fragment in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert not (tmp_path / "x.vcf.gz").exists()
