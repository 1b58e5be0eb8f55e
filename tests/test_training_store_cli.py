"""The paper-scale path end to end at a tiny size: `training.build_store` CLI → `data.store` config → one
training epoch → checkpoint + card, plus the CLI's and the config's errors."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.bench_data import write_synthetic
from mfd_common.card import ModelCard
from training.build_store import main as build_store_main
from training.model.config import ConfigError, config_from_dict, load_config
from training.evaluate import main as evaluate_main
from training.data.labels import LabelStore
from training.data.sources import load_source

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {"positions": 2176, "seq_order": 2, "channels": 8}


def build(capsys, *args: str) -> tuple[int, str]:
    """Run the build_store CLI in-process; returns (exit code, stderr)."""
    code = build_store_main([*map(str, args), "--no-progress"])
    return code, capsys.readouterr().err


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@pytest.fixture()
def reversed_demo(tiny_demo_dir: Path, tmp_path: Path) -> Path:
    """The demo's track TSV with its rows reversed, so store order is not the demo's id order."""
    lines = (tiny_demo_dir / "tracks.tsv").read_text().splitlines()
    tsv = tmp_path / "tracks.tsv"
    tsv.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    (tmp_path / "peaks").symlink_to(tiny_demo_dir / "peaks")
    return tsv


def test_build_store_then_train_one_epoch_from_it(tiny_demo_dir, reversed_demo, tmp_path, capsys):
    store = tmp_path / "store"
    code, err = build(capsys, "--fasta", tiny_demo_dir / "genome.fa", "--tracks", reversed_demo, "--out", store,
                      "--min-overlap", 32)
    assert code == 0, err
    ids = [row["id"] for row in read_tsv(reversed_demo)]
    table = read_tsv(store / "tracks.tsv")
    assert [row["id"] for row in table] == ids == LabelStore(store / "labels").track_ids
    assert table[0]["target"] == read_tsv(reversed_demo)[0]["target"] and Path(table[0]["peaks"]).is_file()
    assert json.loads((store / "store.json").read_text())["min_overlap"] == 32
    assert build(capsys, "--fasta", tiny_demo_dir / "genome.fa", "--tracks", reversed_demo, "--out", store,
                 "--min-overlap", 32)[0] == 0   # a finished store: the rerun is a no-op

    config = {
        "name": "store-tiny",
        "data": {"store": {"dir": "store", "eval_max_windows": 16,
                           "universe": {"min_overlap": 32, "min_coverage": 1, "val_fraction": 0.1, "val_blocks": 2,
                                        "test": ["chr5"]}}},
        "metadata": {"mapping": str(tiny_demo_dir / "mapping.yaml")},
        "model": TINY_MODEL,
        "train": {"epochs": 1, "batch_size": 16, "threads": 1, "max_steps_per_epoch": 2,
                  "init_output_bias": True},   # positive rates read from the store
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "training.train", "--config", str(tmp_path / "config.yaml"),
                          "--out", str(out), "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    card = ModelCard.load(out / "model_card.json")
    assert [t.id for t in card.tracks] == ids
    assert card.tracks[0].metadata["target"] == table[0]["target"]
    assert card.window_bases == 2177
    sizes = load_source(load_config(tmp_path / "config.yaml")).split_sizes()
    assert sizes["test"] > 16   # eval_max_windows caps the per-epoch validation; the card's test figure is whole
    for split, windows in (("val", min(16, sizes["val"])), ("test", sizes["test"])):
        metrics = card.metrics[split]
        assert metrics["windows"] == windows and 0.0 <= metrics["auroc_mean"] <= 1.0, split
        assert set(metrics["per_track"]) <= set(ids)
    assert "rf_accuracy" in card.metrics["test"]["authors"] and "rf_accuracy" not in card.metrics["val"]["authors"]
    assert card.metrics["epoch"] == 1 and np.isfinite(card.metrics["val"]["loss"])
    assert (out / "history.jsonl").read_text().count("\n") == 1
    assert evaluate_main([str(out), "--config", str(tmp_path / "config.yaml"), "--split", "test",
                          "--max-windows", "20", "--out", str(tmp_path / "test.json")]) == 0
    table = capsys.readouterr().err
    assert "authors: rf_accuracy" in table and "authors: pred_bio_tech_val_R2" in table
    report = json.loads((tmp_path / "test.json").read_text(), parse_constant=lambda name: pytest.fail(name))
    assert report["test"]["windows"] == 20 and "shuffled_val_accuracy" in report["test"]["authors"]

    # the universe must match how the store was built, and the store must be finished; errors name the field
    cfg = load_config(tmp_path / "config.yaml", {"data.store.universe.min_overlap": 64})
    with pytest.raises(ConfigError, match=r"config: data.store.universe: .*built with 32 bp; rebuild the store "
                                          r"with --min-overlap 64"):
        load_source(cfg)
    (store / "store.json").unlink()
    with pytest.raises(ConfigError,
                       match=r"config: data.store.dir: .*not a finished data store .*rerun the same build"):
        load_source(load_config(tmp_path / "config.yaml"))


def test_build_store_from_encode_metadata_resumes_and_reports_bad_input(tmp_path, capsys):
    data = write_synthetic(tmp_path / "encode", n_tracks=5, genome_bp=480_000, peaks_per_track=150, n_chroms=12)
    out = tmp_path / "store"
    metadata = data["metadata"]
    code, err = build(capsys, "--fasta", data["fasta"], "--encode-metadata", metadata, "--assembly", "hg19",
                      "--out", out)
    assert code == 2 and "Traceback" not in err
    assert "no narrowPeak/broadPeak peak files for assembly 'hg19' (assemblies in the file: GRCh38)" in err

    # a broken peak file stops the build naming file:line; once fixed, the rerun finishes the same store
    good = tmp_path / "encode" / "ENCFF000003.bed.gz"
    saved = good.read_bytes()
    good.unlink()
    broken = tmp_path / "encode" / "ENCFF000003.bed"
    broken.write_text("chr1\t100\t300\nchr1\t500\n")
    code, err = build(capsys, "--fasta", data["fasta"], "--encode-metadata", metadata, "--out", out)
    assert code == 2 and f"{broken}:2: expected at least 3" in err and "Traceback" not in err
    assert not out.exists()   # staged in store.partial/, renamed into place only when complete
    assert len(json.loads((tmp_path / "store.partial" / "labels.partial" / "progress.json").read_text())["done"]) == 3
    broken.unlink()
    good.write_bytes(saved)
    code, err = build(capsys, "--fasta", data["fasta"], "--encode-metadata", metadata, "--out", out)
    assert code == 0, err
    fresh = tmp_path / "fresh"
    assert build(capsys, "--fasta", data["fasta"], "--encode-metadata", metadata, "--out", fresh)[0] == 0
    assert np.array_equal(np.asarray(LabelStore(out / "labels").bits), np.asarray(LabelStore(fresh / "labels").bits))

    table = read_tsv(out / "tracks.tsv")
    assert [row["id"] for row in table] == [f"ENCFF{k:06d}" for k in range(5)]
    assert table[0]["target"] == "CTCF" and table[0]["lab"] == "Michael Snyder, Stanford"
    assert table[2]["organ"] == "blood,bodily fluid" and table[1]["release_date"] == "2016-02-01"
    # the shipped ENCODE mapping fits a codec on the store's tracks; the paper's universe splits its bins
    cfg = config_from_dict({"data": {"store": {"dir": str(out), "universe": {"min_coverage": 1}}},
                            "metadata": {"mapping": str(ROOT / "training" / "configs" / "paper_mapping.yaml")},
                            "model": TINY_MODEL})
    source = load_source(cfg)
    assert source.tracks.ids == [row["id"] for row in table] and source.codes.shape == (5, source.codec.width)
    assert set(source.split_sizes()) == {"train", "val", "test"}
    assert np.allclose(source.positive_rate(), LabelStore(out / "labels").labels(source.bins["train"]).mean(axis=0))
    code, err = build(capsys, "--fasta", data["fasta"], "--encode-metadata", metadata, "--out", out,
                      "--min-overlap", 1)
    assert code == 2 and "already holds a store built from other inputs" in err and "--force" in err


def test_build_store_own_tsv_errors_name_file_and_line(tiny_demo_dir, tmp_path, capsys):
    lines = (tiny_demo_dir / "tracks.tsv").read_text().splitlines()
    (tmp_path / "peaks").symlink_to(tiny_demo_dir / "peaks")
    short = tmp_path / "short.tsv"
    short.write_text("\n".join([lines[0], lines[1], "DEMO999\tpeaks/DEMO001.narrowPeak\tK562"]) + "\n")
    code, err = build(capsys, "--fasta", tiny_demo_dir / "genome.fa", "--tracks", short, "--out", tmp_path / "s")
    assert code == 2 and f"{short}:3: 3 tab-separated fields, the header has 11" in err and "Traceback" not in err

    past_end = tmp_path / "past.bed"
    past_end.write_text("chr1\t10\t200\nchr5\t9000\t99999\n")
    tsv = tmp_path / "tracks.tsv"
    tsv.write_text(f"id\tpeaks\ttarget\nA\t{past_end}\tCTCF\n")
    code, err = build(capsys, "--fasta", tiny_demo_dir / "genome.fa", "--tracks", tsv, "--out", tmp_path / "s")
    assert code == 2 and f"{past_end}:2: end 99999 is past the end of chr5" in err

    code, err = build(capsys, "--fasta", tmp_path / "nope.fa", "--tracks", tsv, "--out", tmp_path / "s")
    assert code == 2 and "nope.fa does not exist" in err
    with pytest.raises(SystemExit):   # --tracks and --encode-metadata are alternatives
        build_store_main(["--fasta", "g.fa", "--tracks", "a", "--encode-metadata", "b", "--out", "s"])


def test_store_config_section_validation():
    mapping = {"mapping": str(ROOT / "training" / "configs" / "paper_mapping.yaml")}
    paper = config_from_dict({"data": {"store": {"dir": "s", "universe": "paper"}}, "metadata": mapping})
    universe = paper.data.store.universe
    assert (universe.min_overlap, universe.min_coverage, universe.val_fraction, universe.test) == \
        (64, 2, 0.05, ["chr9", "chr10"])
    cases = {
        "data.store.universe: must be paper or a mapping": {"dir": "s", "universe": "papr"},
        "data.store.universe.min_coverage: must be >= 0": {"dir": "s", "universe": {"min_coverage": -1}},
        "data.store.universe.mincov: unknown key": {"dir": "s", "universe": {"mincov": 2}},
        "data.store.universe.val: give validation chromosomes or a val_fraction": {"dir": "s",
                                                                                    "universe": {"val": ["chr2"]}},
        "data.store.num_workers: must be >= 0": {"dir": "s", "num_workers": -1},
        "data.store.dir: Field required": {"universe": "paper"},
    }
    for message, store in cases.items():
        with pytest.raises(ConfigError, match="config: " + message):
            config_from_dict({"data": {"store": store}, "metadata": mapping})
    with pytest.raises(ConfigError, match="config: data.fasta: not used with data.store"):
        config_from_dict({"data": {"store": {"dir": "s"}, "fasta": "g.fa"}, "metadata": mapping})
    with pytest.raises(ConfigError, match=r"config: data.fasta: is required \(or give data.store\)"):
        config_from_dict({"metadata": mapping})
    shipped = load_config(ROOT / "training" / "configs" / "paper.yaml")
    assert shipped.data.store.universe == universe and shipped.model.window_bases == 2177
    # the published checkpoint's recipe: covariance + R² predictors at 0.01; covariance-only is its own preset
    assert (shipped.penalty.kind, shipped.penalty.coeff, shipped.penalty.hidden) == ("covariance+predictor", 0.01, 1024)
    covariance = load_config(ROOT / "training" / "configs" / "paper_covariance.yaml")
    assert (covariance.penalty.kind, covariance.penalty.coeff) == ("covariance", 0.01)
    assert covariance.data.store.universe == universe and covariance.name != shipped.name
