"""`python -m service.batch attribute`: BED regions → <condition>.bio/.tech.contrib.bw and tracks.ini, read back with
pyBigWig and checked against ISM done by hand (mutate each base, score with the TorchScript, −mean of the three
substitution effects); bad input ends with exit 2 and one line."""
from __future__ import annotations

import configparser
import json

import numpy as np
import pyBigWig
import pytest

from tests.fixtures.service import write_genome
from tests.test_batch_variants import batch

pytestmark = pytest.mark.slow


def test_ism_contribution_bigwigs_and_tracks_ini(exported_repository, torchscript_reference, tmp_path):
    genome = write_genome(tmp_path / "genome.fa", {"chr3": 8000}, seed=5)     # N run at 2000–2049
    bed = tmp_path / "regions.bed"
    bed.write_text("track name=mine\n3\t4000\t4006\tpeak2\nchr3\t1995\t2003\tpeak1\n")  # unsorted, `3` naming
    out = tmp_path / "contrib"
    result = batch(["attribute", bed, "--fasta", genome.path, "--conditions", "ENCFF003", "hepg2={\"biosample\": "
                    "\"HepG2\"}", "--out", out], exported_repository)
    summary = json.loads(result.stdout)
    assert summary["regions"] == 2 and summary["bases"] == 14 and summary["method"] == "ism"
    seq_len, chrom = torchscript_reference.card.seq_len, genome.sequences["chr3"]
    conditions = {"ENCFF003": "ENCFF003", "hepg2": {"biosample": "HepG2"}}
    for name, condition in conditions.items():
        for suffix, part in (("bio", "logit_bio"), ("tech", "logit_tech")):
            bw = pyBigWig.open(str(out / f"{name}.{suffix}.contrib.bw"))
            assert bw.chroms() == {"chr3": 8000}
            got = {s: v for s, e, v in bw.intervals("chr3")}
            bw.close()
            want = {}
            for start, end in ((1995, 2003), (4000, 4006)):
                window = (start + end) // 2 - seq_len // 2
                ref = chrom[window:window + seq_len]
                for p in range(start, end):
                    if chrom[p] == "N":
                        continue                                         # no reference base: no value
                    i = p - window
                    mutants = [ref[:i] + b + ref[i + 1:] for b in "ACGT" if b != chrom[p]]
                    s = torchscript_reference.scores([ref] + mutants, [condition])[part][:, 0]
                    want[p] = -np.mean(s[1:] - s[0])
            assert sorted(got) == sorted(want) and len(want) == 11         # 3 of the 14 bases are N
            np.testing.assert_allclose([got[p] for p in sorted(got)], [want[p] for p in sorted(want)], atol=1e-4,
                                       err_msg=f"{name} {part}")
            assert max(abs(v) for v in want.values()) > 1e-4
    ini = configparser.ConfigParser()
    ini.read(out / "tracks.ini")
    files = [ini[s]["file"] for s in ini.sections() if "file" in ini[s]]
    assert files == ["ENCFF003.bio.contrib.bw", "ENCFF003.tech.contrib.bw", "hepg2.bio.contrib.bw",
                     "hepg2.tech.contrib.bw"] and all((out / f).is_file() for f in files)
    assert all(ini[s]["file_type"] == "bigwig" for s in ini.sections() if "file" in ini[s]) and "x-axis" in ini


@pytest.mark.parametrize("bed,extra,message", [
    ("chr3\t100\t3000\n", [], "more than the model's window"),
    ("chr3\t4000\t4010\nchr3\t4005\t4020\n", [], "overlaps"),
    ("chr3\t10\t20\n", [], "runs off chr3"),
    ("chr3\t4000\t4010\n", ["--method", "deeplift"], "--method: unknown attribution method"),
    ("chr3\t4000\tx\n", [], "regions.bed:1"),
    ("chr3\t4000\t4010\n", ["--conditions", "NOPE"], "--conditions[0]"),
])
def test_bad_input_exits_2_with_one_line(exported_repository, tmp_path, bed, extra, message):
    genome = write_genome(tmp_path / "genome.fa", {"chr3": 8000}, seed=5)
    (tmp_path / "regions.bed").write_text(bed)
    conditions = [] if "--conditions" in extra else ["--conditions", "ENCFF003"]
    result = batch(["attribute", tmp_path / "regions.bed", "--fasta", genome.path, *conditions, *extra,
                    "--out", tmp_path / "out"], exported_repository, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
