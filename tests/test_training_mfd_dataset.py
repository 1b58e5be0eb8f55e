"""The authors' released data set (regions.bed + overlaps.h5 + processed metadata TSV), built here in their format
with h5py, read into our store by `python -m training.build_store --mfd-dataset`: exactly their regions, labels,
track order and metadata columns, their split, against a UCSC-named FASTA (`chr1`) while their BED is Ensembl (`1`)."""
import csv
import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

h5py = pytest.importorskip("h5py")

from mfd_common.card import ModelCard  # noqa: E402
from training.build_store import main as build_store_main  # noqa: E402
from training.model.config import config_from_dict  # noqa: E402
from training.data.labels import LabelStore  # noqa: E402
from training.data.mfd_dataset import resolve_chrom  # noqa: E402
from training.data.sources import load_source  # noqa: E402
from training.data.splits import Universe, split_bins  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = 128
SIZES = {"1": 24_000, "2": 20_000, "9": 12_000, "10": 9_000, "11": 15_000}   # FASTA order (Ensembl's)
TRACKS = ["ENCFF555XYZ", "ENCFF111ABC", "ENCFF333DEF", "ENCFF222GHI"]         # output order (not sorted)
METADATA = [   # their processed TSV: R-style names with '.', more tracks than the data set, in another order
    ("File.accession", "Biosample.term.name", "Biosample.organism", "proc_target", "proc_Assay_lvl1", "Library.lab",
     "Experiment.date.released", "Biosample.organ.slims", "proc_Biosample_life_stage", "proc_age_bin",
     "proc_age_bin_units"),
    ("ENCFF111ABC", "K562", "Homo sapiens", "CTCF", "TF ChIP-seq", "Bradley Bernstein, Broad", "2012-02-06",
     "bodily fluid,blood", "adult", "53", "year"),
    ("ENCFF222GHI", "liver", "Homo sapiens", "H3K27ac", "Histone ChIP-seq", "Bradley Bernstein, Broad",
     "2016-09-14", "liver", "adult", "90 or above", "year"),
    ("ENCFF999OLD", "HepG2", "Homo sapiens", "REST", "TF ChIP-seq", "Michael Snyder, Stanford", "2013-01-01",
     "liver", "child", "15", "year"),
    ("ENCFF333DEF", "K562", "Homo sapiens", "", "DNase-seq", "John Stamatoyannopoulos, UW", "2011-02-18",
     "bodily fluid,blood", "adult", "", ""),
    ("ENCFF555XYZ", "heart left ventricle", "Homo sapiens", "CTCF", "TF ChIP-seq", "Michael Snyder, Stanford",
     "2017-03-01", "heart", "adult", "61", "year"),
]


def make_dataset(root: Path, rng: np.random.Generator) -> tuple[Path, list[tuple[str, int]], np.ndarray]:
    """regions.bed (lexicographically sorted chromosomes, as `sort -k1,1 -k2,2n` leaves them) + overlaps.h5."""
    regions = []
    for chrom in sorted(SIZES):                       # 1, 10, 11, 2, 9
        bins = np.sort(rng.choice(SIZES[chrom] // BIN, size=(SIZES[chrom] // BIN) // 2, replace=False))
        regions += [(chrom, int(b) * BIN) for b in bins]
    dense = (rng.random((len(regions), len(TRACKS))) < 0.3).astype(np.uint8)
    dense[rng.random(len(regions)) < 0.07] = 0       # ~7 % of regions without any label, as theirs
    directory = root / "GRCh38" / "221111_128bp_minoverlap64_mincov2_nc10_tissues"
    directory.mkdir(parents=True)
    bed = directory / "regions.bed"
    bed.write_text("".join(f"{c}\t{s}\t{s + BIN}\n" for c, s in regions))
    query, target = np.nonzero(dense)                 # row-major: query sorted ascending
    with h5py.File(directory / "overlaps.h5", "w") as h5:
        q = h5.create_dataset("query", data=query.astype(np.int64), compression="gzip")
        t = h5.create_dataset("target", data=target.astype(np.int64)[:, None], compression="gzip")
        q.attrs["md5"] = hashlib.md5(bed.read_bytes()).hexdigest()
        t.attrs["labels"] = np.array(TRACKS, dtype="S")
        t.attrs["N"] = dense.sum(axis=0)
    return directory, regions, dense


@pytest.fixture()
def dataset(tmp_path: Path):
    rng = np.random.default_rng(3)
    directory, regions, dense = make_dataset(tmp_path / "data" / "processed", rng)
    metadata = tmp_path / "data" / "processed" / "221111_encode_metadata_processed.tsv"
    metadata.write_text("".join("\t".join(row) + "\n" for row in METADATA))
    fasta = tmp_path / "genome.fa"                    # UCSC names: their BED's `1` is our `chr1`
    fasta.write_text("".join(f">chr{c}\n{''.join(rng.choice(list('ACGT'), n))}\n" for c, n in SIZES.items()))
    return {"dir": directory, "regions": regions, "dense": dense, "metadata": metadata, "fasta": fasta}


def build(capsys, *args) -> tuple[int, str]:
    code = build_store_main([*map(str, args), "--no-progress"])
    return code, capsys.readouterr().err


def test_their_dataset_becomes_a_store_with_their_regions_labels_tracks_and_split(dataset, tmp_path, capsys):
    out = tmp_path / "store"
    code, err = build(capsys, "--fasta", dataset["fasta"], "--mfd-dataset", dataset["dir"], "--mfd-metadata",
                      dataset["metadata"], "--out", out)
    assert code == 0, err
    store = LabelStore(out / "labels")
    assert store.track_ids == TRACKS and store.min_overlap == 64
    offsets = dict(zip(store.chromosomes, store.bin_offsets))
    want_bins = np.array([offsets["chr" + c] + s // BIN for c, s in dataset["regions"]])
    assert np.array_equal(store.regions, want_bins)            # their regions, in their BED's order
    assert np.array_equal(store.labels(want_bins), dataset["dense"])
    outside = np.setdiff1d(np.arange(store.n_bins), want_bins)
    assert store.labels(outside).sum() == 0

    with open(out / "tracks.tsv", newline="") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["id"] for r in table] == TRACKS
    assert {"Biosample_term_name", "proc_target", "Library_lab", "Biosample_organ_slims",
            "Experiment_date_released"} <= set(table[0])      # their loader's names ('.' → '_')
    by_id = {r["id"]: r for r in table}
    assert by_id["ENCFF222GHI"]["proc_age_bin"] == "90"        # their "90 or above" → 90
    # a missing age gets the median age and the commonest unit of the same organism and life stage (53, 90, 61)
    assert by_id["ENCFF333DEF"]["proc_age_bin"] == "61.0" and by_id["ENCFF333DEF"]["proc_age_bin_units"] == "year"

    # the split their code makes: test = 9 + 10, validation blocks cut in BED order from the rest
    bed_chroms = np.array([c for c, _ in dataset["regions"]])
    is_test = np.isin(bed_chroms, ["9", "10"])
    rest = want_bins[~is_test]
    interval = len(rest) // 10
    per_interval = (len(want_bins) * 0.05) // 10
    theirs_val = rest[(np.arange(len(rest)) % interval) < per_interval]
    splits = split_bins(store, Universe.paper())
    assert per_interval >= 1 and np.array_equal(splits["val"], np.sort(theirs_val))
    assert np.array_equal(splits["test"], np.sort(want_bins[is_test]))
    assert np.array_equal(np.sort(np.concatenate(list(splits.values()))), np.sort(want_bins))
    assert not np.array_equal(np.sort(rest), rest)             # BED order ≠ genome order here: the test can fail

    mapping = {
        "proc_target": {"type": "category", "intermediate": None},
        "Biosample_organ_slims": {"type": "category", "intermediate": None},
        "proc_Assay_lvl1": {"type": "category", "intermediate": None},
        "Library_lab": {"type": "category", "intermediate": None},
        "biological_features": {"direct": {"variables": ["proc_target"]},
                                "interact": {"variables": ["Biosample_organ_slims"], "out_dim": 8}},
        "technical_features": {"direct": {"variables": ["proc_Assay_lvl1"]},
                               "interact": {"variables": ["Library_lab"], "out_dim": 4}},
    }
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    config = {"name": "theirs", "data": {"store": {"dir": str(out), "universe": "paper", "eval_max_windows": 32}},
              "metadata": {"mapping": str(tmp_path / "mapping.yaml")},
              "model": {"positions": 2176, "seq_order": 2, "channels": 8},
              "train": {"epochs": 1, "batch_size": 8, "threads": 1, "max_steps_per_epoch": 2}}
    source = load_source(config_from_dict(config))
    assert source.tracks.ids == TRACKS and source.split_sizes()["test"] == int(is_test.sum())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "training.train", "--config", str(tmp_path / "config.yaml"),
                          "--out", str(tmp_path / "run"), "--no-progress"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    card = ModelCard.load(tmp_path / "run" / "model_card.json")
    assert [t.id for t in card.tracks] == TRACKS and card.tracks[1].metadata["proc_target"] == "CTCF"


def test_their_dataset_bad_input_exits_2_naming_the_file(dataset, tmp_path, capsys):
    assert resolve_chrom("MT", {"chrM": 1}) == "chrM" and resolve_chrom("chr1", {"1": 1}) == "1"
    args = ["--fasta", dataset["fasta"], "--mfd-dataset", dataset["dir"], "--mfd-metadata", dataset["metadata"]]
    bed = dataset["dir"] / "regions.bed"
    text = bed.read_text()
    # the labels were made for another BED: their md5 attribute says so
    bed.write_text(text.replace("\t", " ", 1))
    code, err = build(capsys, *args, "--out", tmp_path / "a")
    assert code == 2 and "query.md5" in err and "another regions file" in err and not (tmp_path / "a").exists()
    # gzipped BED, their loader's other name: read, md5 over the decompressed text as theirs
    bed.unlink()
    with gzip.open(dataset["dir"] / "regions.bed.gz", "wt") as handle:
        handle.write(text)
    code, err = build(capsys, *args, "--out", tmp_path / "gz")
    assert code == 0, err
    # a metadata TSV lacking one of the data set's tracks
    lines = dataset["metadata"].read_text().splitlines()
    short = tmp_path / "short.tsv"
    short.write_text("\n".join(line for line in lines if not line.startswith("ENCFF333DEF")) + "\n")
    code, err = build(capsys, *args[:4], "--mfd-metadata", short, "--out", tmp_path / "b")
    assert code == 2 and err == f"error: {short}: 1 of the data set's tracks have no row (first: ENCFF333DEF)\n"
    # a region off the 128-bp grid
    (dataset["dir"] / "regions.bed.gz").unlink()
    first, rest = text.split("\n", 1)
    chrom, start, _ = first.split("\t")
    bed.write_text(f"{chrom}\t{int(start) + 5}\t{int(start) + 5 + BIN}\n{rest}")
    with h5py.File(dataset["dir"] / "overlaps.h5", "r+") as h5:
        del h5["query"].attrs["md5"]
    code, err = build(capsys, *args, "--out", tmp_path / "c")
    assert code == 2 and f"{bed}:1: region" in err and "not a 128-bp bin on the 128-bp grid" in err
    assert not (tmp_path / "c").exists()
