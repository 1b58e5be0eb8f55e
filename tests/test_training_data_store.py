"""Paper-scale data path at a small size: ENCODE metadata.tsv, bit-packed label store, paper splits, loader."""
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mfd_common.tokens import decode, reverse_complement
from training.data.encode_report import EncodeMetadataError, read_encode_metadata
from training.data.genome import build_token_genome
from training.data.labels import LabelStore, LabelStoreError, TrackSource, build_label_store
from training.data.loader import StoreWindowDataset, make_loader
from training.evaluation.metrics import shuffled_pair_accuracy, variance_share
from training.data.peaks import PeakFileError
from training.data.splits import SplitError, Universe, split_bins, validation_blocks

BIN = 128
WINDOW = 2177  # the reference model's input: 2176 dinucleotide positions + 1


def brute_labels(peaks: list[tuple[str, int, int]], chrom: str, n_bins: int, min_overlap: int) -> np.ndarray:
    out = np.zeros(n_bins, dtype=np.uint8)
    for c, s, e in peaks:
        if c != chrom:
            continue
        for b in range(n_bins):
            if min(e, (b + 1) * BIN) - max(s, b * BIN) >= min_overlap:
                out[b] = 1
    return out


@pytest.fixture()
def genome_dir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    rng = np.random.default_rng(0)
    seqs = {name: decode(rng.integers(0, 4, size).astype(np.uint8))
            for name, size in {"chr1": 60 * BIN + 17, "chr9": 20 * BIN, "chr10": 12 * BIN}.items()}
    fasta = tmp_path / "genome.fa"
    fasta.write_text("".join(f">{n}\n{s[:3000]}\n{s[3000:]}\n" for n, s in seqs.items()))
    build_token_genome(fasta, tmp_path / "genome", progress=False)
    return tmp_path / "genome", seqs


def random_peaks(rng: np.random.Generator, sizes: dict[str, int], n: int) -> list[tuple[str, int, int]]:
    names = list(sizes)
    out = []
    for _ in range(n):
        chrom = names[rng.integers(len(names))]
        start = int(rng.integers(0, sizes[chrom] - 300))
        out.append((chrom, start, start + int(rng.integers(1, 300))))
    return out


def write_narrowpeak(path: Path, peaks: list[tuple[str, int, int]]) -> Path:
    text = "".join(f"{c}\t{s}\t{e}\tp{i}\t1000\t.\t5.1\t-1\t3.2\t{(e - s) // 2}\n" for i, (c, s, e) in enumerate(peaks))
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def test_label_store_matches_brute_force_and_build_is_restartable(tmp_path, genome_dir):
    gdir, seqs = genome_dir
    sizes = {n: len(s) for n, s in seqs.items()}
    rng = np.random.default_rng(1)
    peaks = [random_peaks(rng, sizes, 40) for _ in range(11)]  # 11 tracks: a second byte per row
    sources = [TrackSource(f"T{k}", write_narrowpeak(tmp_path / f"T{k}.bed{'.gz' if k % 2 else ''}", p))
               for k, p in enumerate(peaks)]
    store = build_label_store(tmp_path / "store", sources, sizes, min_overlap=64, progress=False)
    assert store.row_bytes == 2 and store.n_bins == sum(s // BIN for s in sizes.values())
    for chrom in sizes:
        first, end = store.chrom_bins(chrom)
        got = store.labels(np.arange(first, end))
        want = np.stack([brute_labels(p, chrom, end - first, 64) for p in peaks], axis=1)
        assert np.array_equal(got, want), chrom
        assert np.array_equal(np.asarray(store.coverage[first:end]), want.sum(axis=1))
    assert not (tmp_path / "store.partial").exists()

    # a malformed row in track 7 stops the build with file:line; the half-built store is not openable
    broken = [TrackSource(s.id, s.path) for s in sources]
    bad = tmp_path / "T7_bad.bed"
    bad.write_text("chr1\t10\t200\nchr1\t500\n")
    broken[7] = TrackSource("T7", bad)
    with pytest.raises(PeakFileError, match=r"T7_bad.bed:2: expected at least 3"):
        build_label_store(tmp_path / "again", broken, sizes, min_overlap=64, progress=False)
    with pytest.raises(LabelStoreError, match=r"not a finished label store .*unfinished build is in"):
        LabelStore(tmp_path / "again")
    progress = json.loads((tmp_path / "again.partial" / "progress.json").read_text())
    assert len(progress["done"]) == 7
    # fixed: the rerun resumes after the 7 done tracks and equals a fresh build
    shutil.copy(sources[7].path, bad)
    resumed = build_label_store(tmp_path / "again", broken, sizes, min_overlap=64, progress=False)
    assert np.array_equal(np.asarray(resumed.bits), np.asarray(store.bits))
    with pytest.raises(LabelStoreError, match="already holds a label store for other tracks"):
        build_label_store(tmp_path / "again", sources[:3], sizes, min_overlap=64, progress=False)
    with pytest.raises(PeakFileError, match=r"past the end of chr10 \(1536 bp; is this file from another"):
        build_label_store(tmp_path / "x", [TrackSource("A", write_narrowpeak(tmp_path / "a.bed",
                          [("chr10", 1500, 1600)]))], sizes, progress=False)


def test_paper_universe_and_block_validation(tmp_path, genome_dir):
    gdir, seqs = genome_dir
    sizes = {n: len(s) for n, s in seqs.items()}
    peaks_a = [("chr1", b * BIN, b * BIN + 100) for b in range(0, 60, 2)] + [("chr9", 0, 5 * BIN)]
    peaks_b = [("chr1", b * BIN + 60, b * BIN + 128) for b in range(0, 60, 4)] + [("chr9", 0, 2 * BIN)]
    sources = [TrackSource(k, write_narrowpeak(tmp_path / f"{k}.bed", p)) for k, p in (("A", peaks_a), ("B", peaks_b))]
    store = build_label_store(tmp_path / "s", sources, sizes, min_overlap=64, progress=False)
    splits = split_bins(store, Universe.paper())
    ci, local = store.locate(splits["test"])
    assert {store.chromosomes[c] for c in ci} == {"chr9"} and local.tolist() == [0, 1]   # covered by both
    roi_chr1 = [b for b in range(0, 60, 4)]   # B's 68-bp overlaps count (>= 64), A hits every even bin
    got = np.sort(np.concatenate([splits["train"], splits["val"]])).tolist()
    assert got == roi_chr1
    assert set(splits["train"]).isdisjoint(splits["val"]) and len(splits["val"]) >= 1
    is_val = validation_blocks(1000, 1200, 0.05, 10)
    assert is_val.sum() == 60 and is_val[:6].all() and not is_val[6:100].any() and is_val[100:106].all()
    with pytest.raises(SplitError, match="built with 64 bp; rebuild the store with --min-overlap 1"):
        split_bins(store, Universe(test=["chr9"]))
    with pytest.raises(SplitError, match=r"test: chromosome '7' is not in the label store \(it has: chr1, chr9, chr10\)"):
        split_bins(store, Universe(min_overlap=64, test=["7"]))
    assert split_bins(store, Universe(min_overlap=64, min_coverage=2, test=["9"], val=["10"]))["test"].tolist() == \
        splits["test"].tolist()   # "9" resolves to chr9


def test_store_dataset_windows_labels_augmentation_and_workers(tmp_path, genome_dir):
    gdir, seqs = genome_dir
    sizes = {n: len(s) for n, s in seqs.items()}
    rng = np.random.default_rng(2)
    peaks = [random_peaks(rng, sizes, 30) for _ in range(3)]
    sources = [TrackSource(f"T{k}", write_narrowpeak(tmp_path / f"T{k}.bed", p)) for k, p in enumerate(peaks)]
    store = build_label_store(tmp_path / "s", sources, sizes, progress=False)
    bins = np.arange(store.n_bins)
    plain = StoreWindowDataset(tmp_path / "s", gdir, bins, WINDOW)
    tokens, labels = plain.__getitems__(list(range(len(bins))))
    assert tokens.dtype == torch.uint8 and tokens.shape == (len(bins), WINDOW) and labels.shape == (len(bins), 3)
    assert np.array_equal(labels.numpy(), store.labels(bins).astype(np.float32))
    flank = WINDOW // 2 - BIN // 2
    padded = "N" * 4000 + seqs["chr9"] + "N" * 4000
    for b in (0, 7, 19):   # chr9's bins: the central 128 bp are the bin, the flanks read N off the ends
        row = store.chrom_bins("chr9")[0] + b
        assert decode(tokens[row].numpy()) == padded[4000 + b * BIN - flank:4000 + b * BIN - flank + WINDOW]
    augmented = StoreWindowDataset(tmp_path / "s", gdir, bins, WINDOW, max_shift=3, reverse_complement=True,
                                   augment_per_batch=False, seed=5)
    aug_tokens, aug_labels = augmented.__getitems__(list(range(len(bins))))
    assert np.array_equal(aug_labels.numpy(), labels.numpy())
    kinds = set()
    for i in range(len(bins)):
        a, b = tokens[i].numpy(), aug_tokens[i].numpy()
        for flip in (False, True):
            candidate = reverse_complement(b) if flip else b
            shifts = [s for s in range(-3, 4) if np.array_equal(candidate[3:-3], a[3 + s:WINDOW - 3 + s])]
            if shifts:
                kinds.add((flip, shifts[0] != 0))
                break
        else:
            raise AssertionError(f"window {i} is not a shifted / reverse-complemented copy")
    assert {k[0] for k in kinds} == {False, True} and any(k[1] for k in kinds)
    # the reference's default: one shift and one strand for the whole batch
    per_batch = StoreWindowDataset(tmp_path / "s", gdir, bins, WINDOW, max_shift=3, reverse_complement=True, seed=5)
    batch_kinds = set()
    for epoch in range(8):
        per_batch.set_epoch(epoch)
        batch_tokens = per_batch.__getitems__(list(range(len(bins))))[0].numpy()
        found = {(flip, s) for i in range(len(bins)) for flip in (False, True) for s in range(-3, 4)
                 if np.array_equal((reverse_complement(batch_tokens[i]) if flip else batch_tokens[i])[3:-3],
                                   tokens[i].numpy()[3 + s:WINDOW - 3 + s])}
        assert len(found) == 1, (epoch, found)
        batch_kinds |= found
    assert {flip for flip, _ in batch_kinds} == {False, True}
    # two DataLoader workers serve exactly the batches the main process computes for the same indices
    loader = make_loader(augmented, batch_size=16, shuffle=False, num_workers=2, drop_last=False)
    served = torch.cat([t for t, _ in loader])
    assert np.array_equal(served.numpy(), np.concatenate(
        [augmented.batch(np.arange(i, min(i + 16, len(bins))))[0] for i in range(0, len(bins), 16)]))


def test_encode_metadata_tsv_as_downloaded(tmp_path):
    header = ["File accession", "File format", "File type", "File format type", "Output type", "File assembly",
              "Experiment accession", "Assay", "Biosample term name", "Experiment target", "Lab",
              "Experiment date released", "Biosample organ slims"]

    def row(acc, fmt="bed narrowPeak", assembly="GRCh38", target="CTCF-human", **kw):
        values = {"File accession": acc, "File format": fmt, "File type": fmt.split()[0],
                  "File format type": fmt.split()[-1], "Output type": "IDR thresholded peaks",
                  "File assembly": assembly, "Experiment accession": "ENCSR000AAA", "Assay": "TF ChIP-seq",
                  "Biosample term name": "HepG2", "Experiment target": target, "Lab": "Michael Snyder, Stanford",
                  "Experiment date released": "2016-05-01", "Biosample organ slims": "liver,epithelium"}
        values.update(kw)
        return "\t".join(values[h] for h in header)

    peaks = tmp_path / "peaks"
    peaks.mkdir()
    write_narrowpeak(peaks / "ENCFF001AAA.bed.gz", [("chr1", 1, 100)])
    write_narrowpeak(peaks / "ENCFF002BBB.bed", [("chr1", 1, 100)])
    lines = ["\t".join(header), row("ENCFF001AAA"), row("ENCFF002BBB", target="", Assay="DNase-seq",
                                                                   **{"Experiment accession": "ENCSR000BBB"}),
             row("ENCFF003CCC", fmt="bam"), row("ENCFF004DDD", assembly="hg19")]
    tsv = tmp_path / "metadata.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    table = read_encode_metadata(tsv, assembly="GRCh38", peaks_dir=peaks)
    assert table.ids == ["ENCFF001AAA", "ENCFF002BBB"]
    assert table.peak_paths == [peaks / "ENCFF001AAA.bed.gz", peaks / "ENCFF002BBB.bed"]
    assert table.metadata[0]["target"] == "CTCF" and table.metadata[1]["target"] == ""
    assert table.metadata[0]["organ"] == "liver,epithelium" and table.metadata[0]["lab"] == "Michael Snyder, Stanford"
    assert table.metadata[1]["assay"] == "DNase-seq" and table.metadata[0]["release_date"] == "2016-05-01"

    cases = {
        "dup": (lines + [row("ENCFF001AAA")], r"metadata.tsv:6: duplicated accession 'ENCFF001AAA' \(first on line 2\)"),
        "short": (lines + ["ENCFF009ZZZ\tbed narrowPeak"], r"metadata.tsv:6: 2 tab-separated fields, the header has 13"),
        "nofile": (lines + [row("ENCFF005EEE", **{"Experiment accession": "ENCSR000EEE"})], r"metadata.tsv:6: no peak file for ENCFF005EEE"),
        "assembly": ([lines[0], lines[4]], r"no narrowPeak/broadPeak peak files for assembly 'GRCh38' "
                                           r"\(assemblies in the file: hg19\)"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name / "metadata.tsv"
        path.parent.mkdir()
        path.write_text("\n".join(content) + "\n")
        with pytest.raises(EncodeMetadataError, match=message):
            read_encode_metadata(path, assembly="GRCh38", peaks_dir=peaks)
    with pytest.raises(EncodeMetadataError, match=r"column 'Biosample type' \(for variable 'biosample_type'\)"):
        read_encode_metadata(tsv, assembly="GRCh38", peaks_dir=peaks, variables=["biosample_type"])


def test_independence_measures_on_known_dependence():
    rng = np.random.default_rng(0)
    bio = rng.normal(size=(1000, 4))
    independent = shuffled_pair_accuracy(bio, rng.normal(size=(1000, 4)), max_samples=1000)
    dependent = shuffled_pair_accuracy(bio, bio[:, :2] + 0.05 * rng.normal(size=(1000, 2)), max_samples=1000)
    assert abs(independent - 0.5) < 0.07 and dependent > 0.8, (independent, dependent)
    logits_bio = np.stack([np.array([1.0, -1.0, 1.0, -1.0]), np.zeros(4)], axis=1)        # var 1 and 0
    logits_tech = np.stack([np.array([0.0, 0.0, 0.0, 0.0]), np.array([2.0, 0, 2, 0])], axis=1)  # var 0 and 1
    shares = variance_share(logits_bio, logits_tech)
    assert shares["bio_share"] == pytest.approx(0.5) and shares["ratio_of_mean_variances_bio_tech"] == 1.0


def test_bench_data_small_size(tmp_path):
    from bench.bench_data import run_size
    result = run_size(tmp_path / "bench", n_tracks=3, genome_bp=1_200_000, peaks=1500, window=WINDOW, workers=0,
                      seconds=0.5, batch=64)
    assert result["tracks"] == 3 and result["bins"] > 8000 and result["universe_bins"] > 0
    assert result["windows_per_s_in_process"] > 0 and result["build_rss_mb"] > 0
