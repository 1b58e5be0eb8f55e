"""FASTA, peak files, binning, labels and the window dataset (with augmentation)."""
from pathlib import Path

import numpy as np
import pytest

from mfd_common.tokens import decode, reverse_complement
from training.model.config import AugmentConfig, ConfigError, load_config
from training.data.dataset import TrackTableError, WindowDataset, build_windows, load_training_data
from training.data.genome import Genome, GenomeError
from training.data.peaks import PeakFileError, bin_overlaps, read_peaks

L, BIN = 2176, 128


def write_fasta(path: Path, chroms: dict[str, str]) -> Path:
    path.write_text("".join(f">{name} some description\n" + "\n".join(seq[i:i + 50] for i in range(0, len(seq), 50))
                            + "\n" for name, seq in chroms.items()))
    return path


def random_seq(n: int, seed: int = 0) -> str:
    return decode(np.random.default_rng(seed).integers(0, 4, n).astype(np.uint8))


def test_genome_tokens_and_errors(tmp_path):
    fasta = write_fasta(tmp_path / "g.fa", {"chrA": "ACGTNacgtRY" + "A" * 20, "chrB": "GG"})
    genome = Genome(fasta)
    assert genome.sizes == {"chrA": 31, "chrB": 2}
    assert genome.tokens("chrA")[:11].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 4]  # IUPAC R, Y → N
    with pytest.raises(GenomeError, match=r"chromosome 'chr9' not found in .*g.fa \(it has: chrA, chrB\)"):
        genome.tokens("chr9")
    with pytest.raises(GenomeError, match="does not exist"):
        Genome(tmp_path / "missing.fa")
    not_fasta = tmp_path / "peaks.fa"
    not_fasta.write_text("chr1\t10\t20\n")
    with pytest.raises(GenomeError, match=r"is not a FASTA file: the first line must start with '>'"):
        Genome(not_fasta)


def test_peak_file_errors_name_file_and_line(tmp_path):
    sizes = {"chr1": 1000}
    cases = {
        "cols.bed": ("chr1\t1\t5\nchr1\t7\n", ":2: expected at least 3"),
        "order.bed": ("track name=x\nchr1\t50\t10\n", ":2: start 50 must be less than end 10"),
        "chrom.bed": ("chr1\t1\t5\nchrX\t1\t5\n", ":2: unknown chromosome 'chrX'"),
        "int.bed": ("chr1\tten\t20\n", ":1: start and end must be integers"),
        "past.bed": ("# comment\nchr1\t900\t1001\n", ":2: end 1001 is past the end of chr1"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(PeakFileError) as err:
            read_peaks(path, sizes)
        assert str(err.value).startswith(f"{path}:") and message in str(err.value), str(err.value)
    good = tmp_path / "good.narrowPeak"
    good.write_text("chr1\t300\t400\tp1\t10\t.\t5\t5\t5\t50\nchr1\t10\t20\tp2\t10\t.\t5\t5\t5\t5\n")
    peaks = read_peaks(good, sizes)
    assert peaks["chr1"].tolist() == [[10, 20], [300, 400]]


def test_bin_overlaps_matches_brute_force():
    rng = np.random.default_rng(3)
    starts = rng.integers(0, 5000, 60)
    intervals = np.stack([starts, starts + rng.integers(1, 400, 60)], axis=1)
    fast = bin_overlaps(intervals, 40, BIN)
    slow = np.array([any(s < (b + 1) * BIN and e > b * BIN for s, e in intervals) for b in range(40)])
    assert fast.tolist() == slow.tolist()
    edge = np.array([[128, 256]])  # exactly bin 1, touches neither neighbour (half-open)
    assert np.flatnonzero(bin_overlaps(edge, 4, BIN)).tolist() == [1]


def test_windows_label_the_central_bin_and_filter_n(tmp_path):
    seq = random_seq(30 * BIN, seed=1)
    seq = seq[:5 * BIN] + "N" * (3 * BIN) + seq[8 * BIN:]
    genome = Genome(write_fasta(tmp_path / "g.fa", {"c": seq}))
    peaks = [{"c": np.array([[20 * BIN + 5, 20 * BIN + 9]])}, {"c": np.array([[12 * BIN - 1, 12 * BIN + 1]])}]
    windows = build_windows(genome, ["c"], peaks, window_bases=L, bin_size=BIN, max_shift=3, max_n_fraction=0.5)
    bins = windows.bins.tolist()
    assert 20 in bins and 11 in bins and 12 in bins
    row = bins.index(20)
    assert windows.labels[row].tolist() == [1, 0]
    assert windows.labels[bins.index(11)].tolist() == [0, 1] and windows.labels[bins.index(12)].tolist() == [0, 1]
    assert windows.labels.sum() == 3
    # window for bin 20 is centred on it: its central 128 bp are exactly bin 20
    ds = WindowDataset(windows, L)
    tokens, labels = ds[row]
    assert tokens.shape == (L,) and labels.shape == (2,)
    centre = tokens.numpy()[(L - BIN) // 2:(L + BIN) // 2]
    assert decode(centre) == seq[20 * BIN:21 * BIN]
    # the last bin's window is 47 % N padding: kept at max_n_fraction 0.5, dropped at 0.4
    assert 29 in bins
    tighter = build_windows(genome, ["c"], peaks, window_bases=L, bin_size=BIN, max_n_fraction=0.4).bins.tolist()
    assert 29 not in tighter and 20 in tighter
    strict = build_windows(genome, ["c"], peaks, window_bases=L, bin_size=BIN, max_n_fraction=0.0)
    # only windows (17 bins) clear of the gap (bins 5–7) and of both chromosome ends survive
    assert strict.bins.tolist() == list(range(16, 22))


def test_augmentation_reverse_complements_tokens_keeps_labels_and_shifts(tmp_path):
    seq = random_seq(40 * BIN, seed=2)
    genome = Genome(write_fasta(tmp_path / "g.fa", {"c": seq}))
    peaks = [{"c": np.array([[20 * BIN, 20 * BIN + 50]])}]
    windows = build_windows(genome, ["c"], peaks, window_bases=L, bin_size=BIN, max_shift=3, max_n_fraction=0.0)
    plain = WindowDataset(windows, L)
    index = list(range(len(windows)))
    tokens, labels = plain.__getitems__(index)
    assert tokens.dtype.__str__() == "torch.uint8" and tokens.shape == (len(windows), L)
    rc_only = WindowDataset(windows, L, AugmentConfig(reverse_complement=True, max_shift=0, per="window"), seed=0)
    rc_tokens, rc_labels = rc_only.__getitems__(index)
    assert rc_labels.tolist() == labels.tolist()
    flipped = [i for i in index if not np.array_equal(rc_tokens[i].numpy(), tokens[i].numpy())]
    assert 0 < len(flipped) < len(index)
    for i in flipped:
        assert np.array_equal(rc_tokens[i].numpy(), reverse_complement(tokens[i].numpy()))
    shift_only = WindowDataset(windows, L, AugmentConfig(reverse_complement=False, max_shift=3, per="window"), seed=0)
    sh_tokens, sh_labels = shift_only.__getitems__(index)
    assert sh_labels.tolist() == labels.tolist()
    for i in index:
        a, b = tokens[i].numpy(), sh_tokens[i].numpy()
        matches = [s for s in range(-3, 4) if np.array_equal(b[3:-3], a[3 + s:L - 3 + s])]
        assert matches, f"window {i} is not a shift of at most 3 bp"
    assert any(not np.array_equal(sh_tokens[i].numpy(), tokens[i].numpy()) for i in index)
    # seeded: the same epoch gives the same batch, another epoch another one
    again, _ = shift_only.__getitems__(index)
    assert np.array_equal(again.numpy(), sh_tokens.numpy())
    shift_only.set_epoch(1)
    assert not np.array_equal(shift_only.__getitems__(index)[0].numpy(), sh_tokens.numpy())


def test_reference_augmentation_draws_one_shift_and_one_strand_per_batch(tmp_path):
    """The authors' dataset is indexed by a BatchSampler's whole index list: one draw serves the batch."""
    seq = random_seq(40 * BIN, seed=2)
    genome = Genome(write_fasta(tmp_path / "g.fa", {"c": seq}))
    peaks = [{"c": np.array([[20 * BIN, 20 * BIN + 50]])}]
    windows = build_windows(genome, ["c"], peaks, window_bases=L, bin_size=BIN, max_shift=3, max_n_fraction=0.0)
    index = list(range(len(windows)))
    plain, _ = WindowDataset(windows, L).__getitems__(index)
    per_batch = WindowDataset(windows, L, AugmentConfig(), seed=0)   # the default: per batch
    kinds = set()
    for epoch in range(12):
        per_batch.set_epoch(epoch)
        tokens, _ = per_batch.__getitems__(index)
        found = set()
        for i in index:
            a, b = plain[i].numpy(), tokens[i].numpy()
            for flip in (False, True):
                c = reverse_complement(b) if flip else b
                found |= {(flip, s) for s in range(-3, 4) if np.array_equal(c[3:-3], a[3 + s:L - 3 + s])}
        assert len(found) == 1, (epoch, found)   # every window of the batch: the same strand and shift
        kinds |= found
    assert {flip for flip, _ in kinds} == {False, True}   # both strands and several shifts over the epochs
    assert len({shift for _, shift in kinds}) > 2


def test_load_training_data_from_demo_and_clear_errors(tiny_demo_dir, tmp_path):
    cfg = load_config(tiny_demo_dir / "config.yaml")
    data = load_training_data(cfg)
    assert set(data.splits) == {"train", "val", "test"}
    assert data.codes.shape == (14, data.codec.width)
    assert set(data.splits["val"].chroms) == {"chr4"} and "chr4" not in data.splits["train"].chroms
    assert data.splits["train"].labels.shape[1] == 14 and data.splits["train"].labels.sum() > 0

    bad_split = load_config(tiny_demo_dir / "config.yaml", {"data.split.val": ["chr9"]})
    with pytest.raises(ConfigError, match=r"^config: data.split.val\[0\]: chromosome 'chr9' not found"):
        load_training_data(bad_split)
    no_column = load_config(tiny_demo_dir / "config.yaml", {"data.id_column": "accession"})
    with pytest.raises(TrackTableError, match=r"column 'accession' \(data.id_column\) not found"):
        load_training_data(no_column)
    broken = tmp_path / "broken"
    import shutil
    shutil.copytree(tiny_demo_dir, broken)
    peak = broken / "peaks" / "DEMO003.narrowPeak"
    lines = peak.read_text().splitlines()
    lines[4] = lines[4].replace("chr", "chrom", 1)
    peak.write_text("\n".join(lines) + "\n")
    with pytest.raises(PeakFileError, match=r"DEMO003.narrowPeak:5: unknown chromosome 'chrom"):
        load_training_data(load_config(broken / "config.yaml"))


def test_restoring_gc_keeps_the_bin_count_and_leaves_motif_bases_alone():
    from training.data.demo_genome import _restore_gc
    rng = np.random.default_rng(7)
    for trial in range(200):
        bin_seq = rng.integers(0, 4, size=128).astype(np.uint8)
        gc_before = int(np.isin(bin_seq, (1, 2)).sum())
        mask = np.zeros(128, dtype=bool)
        start = int(rng.integers(0, 100))
        mask[start:start + 25] = True
        bin_seq[mask] = rng.choice((0, 3) if trial % 2 else (1, 2), size=25)   # an AT- or GC-rich motif
        motif = bin_seq[mask].copy()
        _restore_gc(bin_seq, mask, gc_before, rng)
        assert int(np.isin(bin_seq, (1, 2)).sum()) == gc_before
        assert np.array_equal(bin_seq[mask], motif)


def test_gc_neutral_flavour_makes_motif_presence_independent_of_gc(tmp_path):
    """The default demo ties motif presence to GC (CTCF is GC-rich, GATA1 and SPI1 AT-rich); the claims flavour
    does not (the generator is deterministic: measured |corr| <= 0.046 here, against 0.14-0.18 for CTCF by default)."""
    from training.data.demo_genome import DEFAULT_CHROMOSOMES, DemoSpec, generate
    from training.evaluation.demo_preset import DEMO_CI_DATA
    chroms = {name: (length // 4 // 128) * 128 for name, length in DEFAULT_CHROMOSOMES.items()}
    out = generate(tmp_path / "claims", DemoSpec(chroms, seed=1, **DEMO_CI_DATA))  # type: ignore[arg-type]
    truth = np.load(out / "truth.npz")
    gc = np.concatenate([truth[f"gc/{c}"] for c in chroms])
    motif = np.concatenate([truth[f"motif/{c}"] for c in chroms])
    for tf in range(5):
        assert abs(np.corrcoef(motif == tf, gc)[0, 1]) < 0.1, tf


@pytest.mark.parametrize("option, value", [("--copies", "0"), ("--copies", "5"), ("--motif-bin-rate", "0.3"),
                                           ("--motif-bin-rate", "nan"), ("--scale", "-1")])
def test_demo_data_bad_option_exits_2_with_one_line(tmp_path, capsys, option, value):
    from training import demo_data
    assert demo_data.main(["--out", str(tmp_path / "d"), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {option}:"), err
    assert not (tmp_path / "d").exists()
