"""The ENCODE portal's files report as downloaded (every standard column, bigBed twins, bam, bigWig, archived
files, two assemblies, several outputs per experiment, legacy output-type names) and its experiment report, read
by `python -m training.build_store`; peak files gzip'd by the `gzip` tool."""
import csv
import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pytest

from training.build_store import main as build_store_main
from training.data.encode_report import EncodeMetadataError, normalise_output_type, select_encode_tracks
from training.data.labels import LabelStore

# metadata.tsv's columns in the portal's order (files report, 2024)
COLUMNS = ["File accession", "File format", "File type", "File format type", "Output type", "File assembly",
           "Experiment accession", "Assay", "Donor(s)", "Biosample term id", "Biosample term name", "Biosample type",
           "Biosample organism", "Biosample treatments", "Biosample treatments amount",
           "Biosample treatments duration", "Biosample genetic modifications methods",
           "Biosample genetic modifications categories", "Biosample genetic modifications targets",
           "Biosample genetic modifications gene targets", "Biosample genetic modifications site coordinates",
           "Biosample genetic modifications zygosity", "Experiment target", "Library made from",
           "Library depleted in", "Library extraction method", "Library lysis method", "Library crosslinking method",
           "Library strand specific", "Experiment date released", "Project", "RBNS protein concentration",
           "Library fragmentation method", "Library size range", "Biological replicate(s)", "Technical replicate(s)",
           "Read length", "Mapped read length", "Run type", "Paired end", "Paired with", "Index of", "Derived from",
           "Size", "Lab", "md5sum", "dbxrefs", "File download URL", "Genome annotation", "Platform", "Controlled by",
           "File Status", "s3_uri", "Azure URL", "File analysis title", "File analysis status", "Audit WARNING",
           "Audit NOT_COMPLIANT", "Audit ERROR"]
EXPERIMENTS = {   # accession → (assay, biosample, type, target, released)
    "ENCSR000AKB": ("TF ChIP-seq", "K562", "cell line", "CTCF-human", "2012-02-06"),
    "ENCSR136KNW": ("Histone ChIP-seq", "liver", "tissue", "H3K27ac-human", "2016-09-14"),
    "ENCSR000EOT": ("DNase-seq", "K562", "cell line", "", "2011-02-18"),
}
# (file, format, output type, assembly, experiment, replicates, status, analysis)
FILES = [
    ("ENCFF101AAA", "bed narrowPeak", "conservative IDR thresholded peaks", "GRCh38", "ENCSR000AKB", "1, 2",
     "released", "ENCODE4 v1.6.1 GRCh38"),
    ("ENCFF102AAA", "bigBed narrowPeak", "conservative IDR thresholded peaks", "GRCh38", "ENCSR000AKB", "1, 2",
     "released", "ENCODE4 v1.6.1 GRCh38"),
    ("ENCFF103AAA", "bed narrowPeak", "optimal IDR thresholded peaks", "GRCh38", "ENCSR000AKB", "1, 2",
     "released", "ENCODE4 v1.6.1 GRCh38"),
    ("ENCFF104AAA", "bigBed narrowPeak", "optimal IDR thresholded peaks", "GRCh38", "ENCSR000AKB", "1, 2",
     "released", "ENCODE4 v1.6.1 GRCh38"),
    ("ENCFF105AAA", "bed narrowPeak", "optimal IDR thresholded peaks", "GRCh38", "ENCSR000AKB", "1, 2",
     "archived", "ENCODE3 GRCh38"),
    ("ENCFF106AAA", "bam", "alignments", "GRCh38", "ENCSR000AKB", "1", "released", "ENCODE4 v1.6.1 GRCh38"),
    ("ENCFF107AAA", "bigWig", "fold change over control", "GRCh38", "ENCSR000AKB", "1, 2", "released",
     "ENCODE4 v1.6.1 GRCh38"),
    ("ENCFF108AAA", "bed narrowPeak", "optimal idr thresholded peaks", "hg19", "ENCSR000AKB", "1, 2", "released",
     "ENCODE3 hg19"),
    ("ENCFF201BBB", "bed narrowPeak", "pseudo-replicated peaks", "GRCh38", "ENCSR136KNW", "1, 2", "released",
     "ENCODE4 v1.10.0 GRCh38"),
    ("ENCFF202BBB", "bed narrowPeak", "replicated peaks", "GRCh38", "ENCSR136KNW", "1, 2", "released",
     "ENCODE4 v1.9.1 GRCh38"),
    ("ENCFF203BBB", "bed narrowPeak", "replicated peaks", "GRCh38", "ENCSR136KNW", "1, 2", "released",
     "ENCODE4 v1.10.0 GRCh38"),
    ("ENCFF301CCC", "bed narrowPeak", "peaks", "GRCh38", "ENCSR000EOT", "1", "released", "ENCODE4 v3.0.0 GRCh38"),
    ("ENCFF302CCC", "bed narrowPeak", "peaks", "GRCh38", "ENCSR000EOT", "1, 2", "released",
     "ENCODE4 v3.0.0 GRCh38"),
]
PEAK_FILES = [f[0] for f in FILES if f[1].startswith("bed ") and f[3] == "GRCh38" and f[6] == "released"]
CHROMS = {"chr1": 40_000, "chr2": 30_000}


def files_report_row(accession, fmt, output, assembly, experiment, replicates, status, analysis) -> dict:
    assay, biosample, btype, target, released = EXPERIMENTS[experiment]
    ftype, _, ftype2 = fmt.partition(" ")
    row = dict.fromkeys(COLUMNS, "")
    row.update({
        "File accession": accession, "File format": fmt, "File type": ftype, "File format type": ftype2,
        "Output type": output, "File assembly": assembly, "Experiment accession": experiment, "Assay": assay,
        "Donor(s)": "/human-donors/ENCDO000AAD/", "Biosample term id": "EFO:0002067", "Biosample term name": biosample,
        "Biosample type": btype, "Biosample organism": "Homo sapiens", "Experiment target": target,
        "Library made from": "DNA", "Experiment date released": released, "Project": "ENCODE",
        "Biological replicate(s)": replicates, "Technical replicate(s)": ", ".join(f"{r}_1" for r in
                                                                                   replicates.split(", ")),
        "Size": "1834475", "Lab": "ENCODE Processing Pipeline", "md5sum": hashlib.md5(accession.encode()).hexdigest(),
        "File download URL": f"https://www.encodeproject.org/files/{accession}/@@download/{accession}."
                             f"{'bed.gz' if ftype == 'bed' else ftype}",
        "Controlled by": "", "File Status": status, "s3_uri": f"s3://encode-public/2020/{accession}",
        "File analysis title": analysis, "File analysis status": "released",
        "Audit WARNING": "mild to moderate bottlenecking" if ftype == "bam" else "",
    })
    return row


def write_report(path: Path, rows: list[dict], extra: dict[str, list[str]] | None = None) -> Path:
    columns = COLUMNS + list(extra or {})
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for i, row in enumerate(rows):
            writer.writerow([row.get(c, "") for c in COLUMNS] + [v[i] for v in (extra or {}).values()])
    return path


def write_experiment_report(path: Path) -> Path:
    """The portal's experiment report: a date + query URL line, then the header."""
    header = ["ID", "Accession", "Assay name", "Assay title", "Target of assay", "Biosample summary",
              "Biosample term name", "Lab", "Project", "Organism", "Life stage", "Organ", "System",
              "Developmental slims", "Files"]
    rows = [
        ["/experiments/ENCSR000AKB/", "ENCSR000AKB", "ChIP-seq", "TF ChIP-seq", "CTCF", "Homo sapiens K562",
         "K562", "Bradley Bernstein, Broad", "ENCODE", "Homo sapiens", "adult", "bodily fluid,blood",
         "immune system", "mesoderm", "/files/ENCFF101AAA/"],
        ["/experiments/ENCSR136KNW/", "ENCSR136KNW", "ChIP-seq", "Histone ChIP-seq", "H3K27ac",
         "Homo sapiens liver tissue male adult (32 years)", "liver", "Bradley Bernstein, Broad", "ENCODE",
         "Homo sapiens", "adult", "liver", "digestive system,endocrine system", "endoderm", "/files/ENCFF201BBB/"],
        ["/experiments/ENCSR000EOT/", "ENCSR000EOT", "DNase-seq", "DNase-seq", "", "Homo sapiens K562", "K562",
         "John Stamatoyannopoulos, UW", "ENCODE", "Homo sapiens", "adult", "bodily fluid,blood", "immune system",
         "mesoderm", "/files/ENCFF301CCC/"],
    ]
    text = "2024-05-02 10:11:12\thttps://www.encodeproject.org/report.tsv?type=Experiment&status=released\n"
    path.write_text(text + "\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    return path


@pytest.fixture()
def portal(tmp_path: Path) -> dict[str, Path]:
    """metadata.tsv + experiment report + gzip'd narrowPeak files (by the gzip tool) + a FASTA."""
    rng = np.random.default_rng(7)
    fasta = tmp_path / "genome.fa"
    fasta.write_text("".join(f">{c}\n{''.join(rng.choice(list('ACGT'), n))}\n" for c, n in CHROMS.items()))
    downloads = tmp_path / "encode"
    downloads.mkdir()
    for k, accession in enumerate(PEAK_FILES):
        lines = []
        for i in range(20 + 5 * k):
            chrom = "chr1" if i % 3 else "chr2"
            start = int(rng.integers(0, CHROMS[chrom] - 600))
            lines.append(f"{chrom}\t{start}\t{start + int(rng.integers(150, 500))}\t.\t1000\t.\t"
                         f"{rng.uniform(5, 60):.5f}\t-1\t{rng.uniform(2, 9):.5f}\t{int(rng.integers(50, 140))}")
        text = downloads / f"{accession}.bed"
        text.write_text("\n".join(lines) + "\n")
        subprocess.run(["gzip", "-n", str(text)], check=True)   # → ENCFF….bed.gz, as the portal serves it
    report = write_report(downloads / "metadata.tsv", [files_report_row(*f) for f in FILES])
    return {"fasta": fasta, "report": report, "experiments": write_experiment_report(tmp_path / "experiments.tsv"),
            "dir": downloads}


def build(capsys, *args) -> tuple[int, str]:
    code = build_store_main([*map(str, args), "--no-progress"])
    return code, capsys.readouterr().err


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_files_report_as_downloaded_one_track_per_experiment(portal, tmp_path, capsys):
    out = tmp_path / "store"
    code, err = build(capsys, "--fasta", portal["fasta"], "--encode-metadata", portal["report"], "--out", out)
    assert code == 2 and not out.exists() and err.count("\n") == 1 and "Traceback" not in err
    assert "peak files of several assemblies (GRCh38 (7 files), hg19 (1 files)); choose one with --assembly" in err

    code, err = build(capsys, "--fasta", portal["fasta"], "--encode-metadata", portal["report"], "--assembly",
                      "GRCh38", "--encode-experiments", portal["experiments"], "--out", out)
    assert code == 0, err
    table = read_tsv(out / "tracks.tsv")
    # TF: optimal IDR over conservative; histone: replicated over pseudoreplicated, the newer analysis (v1.10 >
    # v1.9); DNase: the pooled peaks (replicates 1, 2) over one replicate's
    assert [r["id"] for r in table] == ["ENCFF103AAA", "ENCFF203BBB", "ENCFF302CCC"]
    assert LabelStore(out / "labels").track_ids == [r["id"] for r in table]
    assert [r["output_type"] for r in table] == ["optimal IDR thresholded peaks", "replicated peaks", "peaks"]
    assert [r["target"] for r in table] == ["CTCF", "H3K27ac", ""]
    # lab, slims and life stage from the experiment report, not the files report's "ENCODE Processing Pipeline"
    assert [r["lab"] for r in table] == ["Bradley Bernstein, Broad", "Bradley Bernstein, Broad",
                                         "John Stamatoyannopoulos, UW"]
    assert table[1]["organ"] == "liver" and table[1]["system"] == "digestive system,endocrine system"
    assert table[0]["life_stage"] == "adult" and table[2]["developmental"] == "mesoderm"
    assert "kept 3 peak files (GRCh38); skipped 10" in err
    for reason in ("2 format bigBed narrowPeak", "1 format bam", "1 format bigWig", "1 status archived",
                   "1 assembly hg19", "1 another output of the experiment (conservative IDR thresholded peaks)",
                   "1 another output of the experiment (pseudoreplicated peaks)",
                   "1 another output of the experiment (replicated peaks)",
                   "1 another output of the experiment (peaks)"):
        assert reason in err, reason

    every = tmp_path / "every"
    code, err = build(capsys, "--fasta", portal["fasta"], "--encode-metadata", portal["report"], "--assembly",
                      "GRCh38", "--all-outputs", "--out", every)
    assert code == 0, err
    assert [r["id"] for r in read_tsv(every / "tracks.tsv")] == PEAK_FILES
    assert "'lab' of 7 tracks is 'ENCODE Processing Pipeline'" in err   # no experiment report: said, not hidden
    code, err = build(capsys, "--fasta", portal["fasta"], "--encode-metadata", portal["report"], "--assembly",
                      "GRCh38", "--status", "released,archived", "--all-outputs", "--out", tmp_path / "archived",
                      "--peaks-dir", portal["dir"])
    assert code == 2 and "metadata.tsv:6: no peak file for ENCFF105AAA" in err   # archived rows kept on request


def test_preferred_default_flag_wins_and_bad_input_names_file_and_line(portal, tmp_path, capsys):
    rows = [files_report_row(*f) for f in FILES]
    flags = ["true" if f[0] in ("ENCFF101AAA", "ENCFF201BBB") else "false" for f in FILES]
    report = write_report(portal["dir"] / "preferred.tsv", rows, {"Preferred default": flags})
    table, selection = select_encode_tracks(report, assembly="GRCh38")
    assert table.ids == ["ENCFF101AAA", "ENCFF201BBB", "ENCFF302CCC"]   # the flag beats the assay preference
    assert table.metadata[1]["output_type"] == "pseudoreplicated peaks"
    assert selection.skipped["not the experiment's preferred default (optimal IDR thresholded peaks)"] == 1
    assert normalise_output_type("Conservative IDR Thresholded Peaks") == "conservative IDR thresholded peaks"
    assert normalise_output_type("pseudo replicated peaks") == "pseudoreplicated peaks"

    lines = portal["report"].read_text().splitlines()
    short = portal["dir"] / "short.tsv"
    short.write_text("\n".join(lines[:4] + ["ENCFF999ZZZ\tbed narrowPeak"] + lines[4:]) + "\n")
    out = tmp_path / "s"
    code, err = build(capsys, "--fasta", portal["fasta"], "--encode-metadata", short, "--assembly", "GRCh38",
                      "--out", out)
    assert code == 2 and err == f"error: {short}:5: 2 tab-separated fields, the header has {len(COLUMNS)}\n"
    assert not out.exists() and not (tmp_path / "s.partial").exists()
    experiments = portal["experiments"].read_text().splitlines()
    partial = tmp_path / "partial_experiments.tsv"
    partial.write_text("\n".join(experiments[:-1]) + "\n")   # ENCSR000EOT missing
    code, err = build(capsys, "--fasta", portal["fasta"], "--encode-metadata", portal["report"], "--assembly",
                      "GRCh38", "--encode-experiments", partial, "--out", out)
    assert code == 2 and "metadata.tsv:14: experiment 'ENCSR000EOT' of ENCFF302CCC is not in the experiment " \
                         "report" in err and not out.exists()
    renamed = portal["dir"] / "renamed.tsv"
    renamed.write_text(portal["report"].read_text().replace("File assembly", "Genome"))
    code, err = build(capsys, "--fasta", portal["fasta"], "--encode-metadata", renamed, "--out", out)
    assert code == 2 and f"{renamed}:1: column 'File assembly' not found" in err


def test_only_bigbed_rows_say_why_nothing_was_kept(portal, tmp_path):
    rows = [files_report_row(*f) for f in FILES if f[1].startswith("bigBed")]
    report = write_report(tmp_path / "bigbed_only.tsv", rows)
    with pytest.raises(EncodeMetadataError, match=r"no narrowPeak/broadPeak peak files for assembly 'GRCh38' \(assemblies in "
                                         r"the file: GRCh38\); skipped: 2 format bigBed narrowPeak"):
        select_encode_tracks(report, assembly="GRCh38")
