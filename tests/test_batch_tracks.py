"""`python -m service.batch tracks` writes one bigWig per condition (and its biological-only twin) that pyBigWig
reads back with the values of each bin's centred window scored independently; bins whose window runs off the
chromosome stay empty. Also: the Indexed Job manifests render and validate strictly."""
from __future__ import annotations

import json

import numpy as np
import pyBigWig
import yaml

from tests.fixtures.infra import REPO_ROOT, kubernetes_validate, kustomize
from tests.fixtures.service import write_genome
from tests.fixtures.variant_effects import reverse_complement
from tests.test_batch_variants import batch


def test_tracks_bigwig_values(exported_repository, torchscript_reference, tmp_path):
    genome = write_genome(tmp_path / "genome.fa", {"chr3": 8000}, seed=5)
    out = tmp_path / "tracks"
    result = batch(["tracks", "3:1-1,600", "--fasta", genome.path, "--conditions", "ENCFF003", "--out", out,
                    "--with-biological", "--bins-per-shard", "4"], exported_repository)
    summary = json.loads(result.stdout)
    seq_len, chrom = torchscript_reference.card.seq_len, genome.sequences["chr3"]
    flank = (seq_len - 128) // 2
    scored = [b for b in range(13) if b * 128 - flank >= 0]  # bins 0..12 overlap 1..1600
    assert summary["bins_empty"] == 13 - len(scored) > 0
    for name, bio in (("ENCFF003.bw", False), ("ENCFF003.bio.bw", True)):
        bw = pyBigWig.open(str(out / name))
        assert bw.chroms() == {"chr3": 8000}
        intervals = bw.intervals("chr3")
        assert [(s, e) for s, e, _ in intervals] == [(b * 128, b * 128 + 128) for b in scored]
        windows = [chrom[b * 128 - flank:b * 128 - flank + seq_len] for b in scored]
        fwd = torchscript_reference.scores(windows, ["ENCFF003"], biological_only=bio)["probability"][:, 0]
        rev = torchscript_reference.scores([reverse_complement(w) for w in windows], ["ENCFF003"],
                                           biological_only=bio)["probability"][:, 0]
        np.testing.assert_allclose([v for _, _, v in intervals], (fwd + rev) / 2, atol=2e-6, err_msg=name)
        bw.close()


def test_batch_job_manifests_validate_and_agree(tmp_path):
    docs = [d for d in yaml.safe_load_all(kustomize(REPO_ROOT / "k8s" / "components" / "batch")) if d]
    path = tmp_path / "batch.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = kubernetes_validate(path)
    assert result.returncode == 0 and "WARN" not in result.stdout + result.stderr, result.stdout + result.stderr
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}
    score, merge = jobs["mfd-batch-score"]["spec"], jobs["mfd-batch-merge"]["spec"]
    args = score["template"]["spec"]["containers"][0]["args"]
    n = int(args[args.index("--shard-count") + 1])
    assert score["completionMode"] == "Indexed" and score["completions"] == score["parallelism"] == n > 1
    assert args[args.index("--shard-index") + 1] == "$(SHARD_INDEX)" and "--no-merge" in args
    env = {e["name"]: e for e in score["template"]["spec"]["containers"][0]["env"]}
    assert "job-completion-index" in env["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    merge_args = merge["template"]["spec"]["containers"][0]["args"]
    assert "--merge-only" in merge_args
    same = [a for a in args if a not in ("--no-merge", "$(SHARD_INDEX)", "--shard-index")]
    assert same == [a for a in merge_args if a not in ("--merge-only", "--wait-s", merge_args[-1])]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["MFD_BACKEND"] == "triton" and config["MFD_TRITON_URL"].startswith("mfd-triton:")
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    selector = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    for job in jobs.values():
        assert selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()


def test_tracks_of_a_bed_of_regions(exported_repository, torchscript_reference, tmp_path):
    """A BED (header lines, Ensembl names on a UCSC FASTA, overlapping regions, two chromosomes) scores the union
    of its regions' bins into one bigWig; a malformed line exits 2 naming file:line and writes nothing."""
    genome = write_genome(tmp_path / "genome.fa", {"chr3": 8000, "chr5": 6000}, seed=6)
    bed = tmp_path / "regions.bed"
    bed.write_text("track name=peaks\n# a comment\n3\t3000\t3300\tpeak1\t0\t+\nchr3\t3200\t3500\tpeak2\n"
                   "5\t4000\t4100\tpeak3\n")
    out = tmp_path / "tracks"
    result = batch(["tracks", bed, "--fasta", genome.path, "--conditions", "ENCFF003", "--out", out,
                    "--bins-per-shard", "3"], exported_repository)
    summary = json.loads(result.stdout)
    expected = [("chr3", b) for b in range(3000 // 128, -(-3500 // 128))] + [("chr5", 4000 // 128),
                                                                            ("chr5", 4096 // 128)]
    assert summary["regions"] == 3 and summary["bins"] == len(expected) and summary["bins_empty"] == 0
    seq_len = torchscript_reference.card.seq_len
    flank = (seq_len - 128) // 2
    bw = pyBigWig.open(str(out / "ENCFF003.bw"))
    got = [(c, s, e, v) for c in ("chr3", "chr5") for s, e, v in (bw.intervals(c) or ())]
    bw.close()
    assert [(c, s, e) for c, s, e, _ in got] == [(c, b * 128, b * 128 + 128) for c, b in expected]
    windows = [genome.sequences[c][b * 128 - flank:b * 128 - flank + seq_len] for c, b in expected]
    fwd = torchscript_reference.scores(windows, ["ENCFF003"])["probability"][:, 0]
    rev = torchscript_reference.scores([reverse_complement(w) for w in windows], ["ENCFF003"])["probability"][:, 0]
    np.testing.assert_allclose([v for *_, v in got], (fwd + rev) / 2, atol=2e-6)

    bad = tmp_path / "bad.bed"
    bad.write_text("chr3\t100\t200\nchr3\t300\n")
    failed = batch(["tracks", bad, "--fasta", genome.path, "--conditions", "ENCFF003", "--out", tmp_path / "bad"],
                   exported_repository, check=False)
    assert failed.returncode == 2 and f"{bad}:2:" in failed.stderr and "Traceback" not in failed.stderr
    assert not list((tmp_path / "bad").glob("*.bw"))
