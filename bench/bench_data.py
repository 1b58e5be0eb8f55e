"""Data pipeline benchmark: synthetic genome + N narrowPeak tracks → label store → DataLoader windows/s.

    python -m bench.bench_data                       # two sizes, then the figure extrapolated to GRCh38 × 2,106
    python -m bench.bench_data --sizes 20x8e6 --workers 2

Each size runs in a fresh (spawned) process so its peak RSS (VmHWM) is its own. Reported: build time (genome
encoding and label bits separately), peak RSS of build and of loading, store size on disk, and windows/s of the
torch DataLoader with augmentation (shift ±3 + reverse complement) for 0 workers (in-process, = one core) and
for `--workers` workers. The extrapolation is linear: label bits scale with bins × tracks, build time with the
number of peaks plus the bins scanned for coverage; RSS of the loader does not grow with the store (it is
memory-mapped; the page cache holds what is hot).
"""
from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

GRCH38_BP = 3_100_000_000
PAPER_TRACKS = 2106
BIN = 128


def write_synthetic(out: Path, n_tracks: int, genome_bp: int, peaks_per_track: int, seed: int = 0,
                    n_chroms: int = 12) -> dict[str, Any]:
    """FASTA with N gaps, ENCODE-style narrowPeak.gz per track and an ENCODE portal metadata.tsv."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {f"chr{i + 1}": genome_bp // n_chroms - i * 1000 for i in range(n_chroms)}  # chr9, chr10 = test
    with open(out / "genome.fa", "wb") as fa:
        for name, size in sizes.items():
            seq = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, size)]
            seq[: min(10_000, size // 10)] = ord("N")  # a telomere-like gap
            fa.write(f">{name}\n".encode())
            for i in range(0, size, 1 << 20):  # 1-Mb lines are legal FASTA for pyfaidx and fast to write
                fa.write(seq[i:i + (1 << 20)].tobytes() + b"\n")
    # shared hotspots (realistic: peaks of different tracks coincide), plus track-specific peaks
    names, lengths = list(sizes), np.array(list(sizes.values()))
    hot_chrom = rng.choice(len(names), size=peaks_per_track * 2, p=lengths / lengths.sum())
    hot_pos = rng.integers(0, lengths[hot_chrom] - 2000)
    header = ("File accession\tFile format\tFile type\tFile format type\tOutput type\tFile assembly\t"
              "Experiment accession\tAssay\tBiosample term name\tBiosample type\tExperiment target\t"
              "Experiment date released\tLab\tBiosample organ slims\n")
    rows = []
    for k in range(n_tracks):
        accession = f"ENCFF{k:06d}"
        shared = rng.random(peaks_per_track) < 0.6
        chrom = np.where(shared, hot_chrom[:peaks_per_track], rng.choice(len(names), peaks_per_track,
                                                                           p=lengths / lengths.sum()))
        start = np.where(shared, hot_pos[:peaks_per_track] + rng.integers(-100, 100, peaks_per_track),
                         rng.integers(0, lengths[chrom] - 2000))
        start = np.clip(start, 0, None)
        end = start + rng.integers(150, 600, peaks_per_track)
        lines = "".join(f"{names[c]}\t{s}\t{e}\tpeak{i}\t1000\t.\t{5.0 + i % 7:.2f}\t-1\t3.1\t{(e - s) // 2}\n"
                        for i, (c, s, e) in enumerate(zip(chrom, start, end)))
        with gzip.open(out / f"{accession}.bed.gz", "wt", compresslevel=1) as handle:
            handle.write(lines)
        rows.append(f"{accession}\tbed narrowPeak\tbed\tnarrowPeak\tIDR thresholded peaks\tGRCh38\t"
                    f"ENCSR{k:06d}\tTF ChIP-seq\t{['K562', 'HepG2', 'GM12878'][k % 3]}\tcell line\t"
                    f"{['CTCF', 'REST', 'MAX', 'JUND'][k % 4]}-human\t2016-0{1 + k % 9}-01\t"
                    f"{['Michael Snyder, Stanford', 'Bradley Bernstein, Broad'][k % 2]}\t"
                    f"{['blood', 'liver', 'blood,bodily fluid'][k % 3]}\n")
    (out / "metadata.tsv").write_text(header + "".join(rows))
    return {"sizes": sizes, "fasta": out / "genome.fa", "metadata": out / "metadata.tsv"}


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _build(work: str, queue: Any) -> None:
    from training.data.encode_report import read_encode_metadata
    from training.data.genome import build_token_genome
    from training.data.labels import TrackSource, build_label_store
    work_path = Path(work)
    t0 = time.perf_counter()
    genome = build_token_genome(work_path / "data" / "genome.fa", work_path / "store_genome", progress=False)
    t1 = time.perf_counter()
    table = read_encode_metadata(work_path / "data" / "metadata.tsv", assembly="GRCh38")
    store = build_label_store(work_path / "store_labels", [TrackSource(t, p) for t, p in zip(table.ids, table.peak_paths)],
                              genome.sizes, bin_size=BIN, min_overlap=64, progress=False)
    t2 = time.perf_counter()
    queue.put({"genome_s": t1 - t0, "labels_s": t2 - t1, "build_rss_mb": _vm_hwm_mb(),
               "bins": store.n_bins, "tracks": store.n_tracks,
               "store_mb": sum(f.stat().st_size for f in (work_path / "store_labels").iterdir()) / 2**20})


def write_wide_store(work: Path, n_tracks: int, density: float = 0.02, seed: int = 0) -> Path:
    """A store on the built one's bins with `n_tracks` random tracks: the loader's cost at the paper's width
    (2,106 tracks) without parsing 2,106 peak files. Coverage is recomputed from the random bits."""
    from training.data.labels import COVERAGE_FILE, LABELS_FILE, META_FILE, _POPCOUNT
    source, wide = work / "store_labels", work / f"store_wide{n_tracks}"
    wide.mkdir(exist_ok=True)
    meta = json.loads((source / META_FILE).read_text())
    row_bytes = (n_tracks + 7) // 8
    meta.update(tracks=[f"T{k:05d}" for k in range(n_tracks)], row_bytes=row_bytes,
                peak_files=[], bins_hit=[])
    rng = np.random.default_rng(seed)
    bits = np.memmap(wide / LABELS_FILE, dtype=np.uint8, mode="w+", shape=(meta["total_bins"], row_bytes))
    cov = np.memmap(wide / COVERAGE_FILE, dtype=np.uint16, mode="w+", shape=(meta["total_bins"],))
    for start in range(0, meta["total_bins"], 1 << 16):
        rows = min(1 << 16, meta["total_bins"] - start)
        dense = rng.random((rows, row_bytes * 8), dtype=np.float32) < density
        dense[:, n_tracks:] = False
        bits[start:start + rows] = np.packbits(dense, axis=1, bitorder="little")
        cov[start:start + rows] = _POPCOUNT[bits[start:start + rows]].sum(axis=1)
    bits.flush()
    cov.flush()
    (wide / META_FILE).write_text(json.dumps(meta))
    return wide


def _load(work: str, window: int, workers: int, batch: int, seconds: float, queue: Any,
          store_name: str = "store_labels") -> None:
    import torch
    from training.data.labels import LabelStore
    from training.data.loader import StoreWindowDataset, make_loader
    from training.data.splits import Universe, split_bins
    torch.set_num_threads(1)
    work_path = Path(work)
    store = LabelStore(work_path / store_name)
    bins = split_bins(store, Universe.paper())["train"]
    dataset = StoreWindowDataset(work_path / store_name, work_path / "store_genome", bins, window,
                                 max_shift=3, reverse_complement=True)
    loader = make_loader(dataset, batch, num_workers=workers)
    n, started = 0, None
    for i, (tokens, labels) in enumerate(loader):
        if i == 2 * max(1, workers):
            started, n = time.perf_counter(), 0   # skip worker start-up
        n += len(tokens)
        if started and time.perf_counter() - started > seconds:
            break
    rate = n / (time.perf_counter() - started) if started else float("nan")
    queue.put({"windows_per_s": rate, "load_rss_mb": _vm_hwm_mb(), "universe_bins": len(bins)})


def _in_child(target: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue), kwargs=kwargs)
    proc.start()
    import queue as queue_module
    while True:
        try:
            result = queue.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{target.__name__} failed (exit code {proc.exitcode}); see its traceback above")
    proc.join()
    return result


def run_size(work: Path, n_tracks: int, genome_bp: int, peaks: int, window: int, workers: int,
             seconds: float, batch: int = 256, wide_tracks: int = 0) -> dict[str, Any]:
    t0 = time.perf_counter()
    write_synthetic(work / "data", n_tracks, genome_bp, peaks)
    result: dict[str, Any] = {"tracks": n_tracks, "genome_bp": genome_bp, "peaks_per_track": peaks,
                              "synthesis_s": time.perf_counter() - t0}
    result.update(_in_child(_build, str(work)))
    single = _in_child(_load, str(work), window, 0, batch, seconds)
    multi = _in_child(_load, str(work), window, workers, batch, seconds) if workers else {}
    result.update({"universe_bins": single["universe_bins"], "windows_per_s_in_process": single["windows_per_s"],
                   "load_rss_mb_in_process": single["load_rss_mb"]})
    if multi:
        result.update({f"windows_per_s_{workers}_workers": multi["windows_per_s"],
                       f"load_rss_mb_main_{workers}_workers": multi["load_rss_mb"]})
    if wide_tracks:
        wide = write_wide_store(work, wide_tracks)
        got = _in_child(_load, str(work), window, 0, batch, seconds, store_name=wide.name)
        result.update({f"windows_per_s_in_process_{wide_tracks}_tracks": got["windows_per_s"],
                       f"load_rss_mb_in_process_{wide_tracks}_tracks": got["load_rss_mb"]})
    return result


def extrapolate(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Linear in (tracks × bins) for bits, in peaks for parsing; fitted from the two sizes."""
    bins = GRCH38_BP // BIN
    store_gb = bins * ((PAPER_TRACKS + 7) // 8 + 2) / 1e9
    per_peak_s = large["labels_s"] / (large["tracks"] * large["peaks_per_track"])
    return {
        "grch38_bins": bins, "store_gb_on_disk": round(store_gb, 2), "genome_tokens_gb_on_disk": 3.1,
        "label_build_hours_at_50k_peaks_per_track": round(per_peak_s * PAPER_TRACKS * 50_000 / 3600, 2),
        "build_rss_mb_small_large": [round(small["build_rss_mb"]), round(large["build_rss_mb"])],
        "note": "training RAM = loader buffers (tens of MB per worker) + page cache of the memory-mapped "
                "store, which the OS bounds; the store itself is never loaded into process memory",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["16x2e7", "64x8e7"],
                        help="TRACKSxGENOME_BP per run (default: 16 tracks × 20 Mb, 64 × 80 Mb)")
    parser.add_argument("--peaks", type=int, default=30_000, help="narrowPeaks per track")
    parser.add_argument("--window", type=int, default=2177, help="window bases (reference model: 2177)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="loader measurement time per setting")
    parser.add_argument("--wide-tracks", type=int, default=PAPER_TRACKS,
                        help="also time the loader on a random store this wide (0: skip)")
    parser.add_argument("--work", default="build/bench_data")
    args = parser.parse_args(argv)
    results = []
    for size in args.sizes:
        tracks, bp = size.lower().split("x")
        work = Path(args.work) / size
        import shutil
        shutil.rmtree(work, ignore_errors=True)
        result = run_size(work, int(tracks), int(float(bp)), args.peaks, args.window, args.workers, args.seconds,
                          wide_tracks=args.wide_tracks)
        results.append(result)
        print(json.dumps(result), flush=True)
    if len(results) >= 2:
        print(json.dumps({"extrapolated_grch38_2106_tracks": extrapolate(results[0], results[-1])}), flush=True)
    print(f"# machine: {os.cpu_count()} cores (shared with other jobs when measured)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
