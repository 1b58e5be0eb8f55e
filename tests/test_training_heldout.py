"""`python -m training.heldout` (issue 18, item 6a): train with tracks held out, score them from metadata alone.

Planted truth (training.data.demo_genome): DEMO002 is K562 CTCF from lab-B; K562 CTCF (lab-A), HepG2 and GM12878 CTCF
stay in training, so the biology of the held-out experiment is covered and its biological logit, computed from
its metadata alone, must rank its CTCF peaks well above chance. DEMO010 (HepG2 CEBPB, lab-C, CUT&RUN, released
2021) is the only 2021 track: its year is unseen by the trained codec and must be reported as such.

Training is tiny (C=8, a 385-base window (positions 384, crop 1: the motifs sit in the central bin), batch 32,
6 × 100 steps, lr 5e-3, one thread: ~28 s of CPU), so the thresholds sit well below what it reaches; measured
(seed 0): DEMO002 biological logit AUROC 0.97, same-target mean 0.98, total logit 0.77 (its technical part, 0.50,
has not learnt lab-B in 600 steps), DEMO010 ~0.5 (CEBPB is weakly planted and barely learnt at this budget).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import heldout
from training.evaluation.heldout import TSV_COLUMNS

TINY = ["model.channels=8", "model.positions=384", "model.crop=1", "train.epochs=6", "train.max_steps_per_epoch=100",
        "train.eval_max_windows=256", "train.lr=0.005", "train.threads=1", "train.batch_size=32",
        "train.init_output_bias=true"]
ONE_STEP = TINY + ["train.epochs=1", "train.max_steps_per_epoch=5"]   # later --set wins


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def heldout_run(demo_data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("heldout")
    assert heldout.main(["--config", str(demo_data_dir / "config.yaml"), "--out", str(out), "--holdout-tracks",
                         "DEMO002", "DEMO010", *_sets(TINY), "--no-progress"]) == 0
    return out


@pytest.mark.slow
def test_heldout_track_is_predicted_from_its_metadata(heldout_run, demo_data_dir):
    result = json.loads((heldout_run / "heldout.json").read_text())
    rows = {r["track"]: r for r in result["tracks"]}
    assert result["held_out"] == ["DEMO002", "DEMO010"] and result["kept"] == 12
    card = json.loads((heldout_run / "model" / "model_card.json").read_text())
    assert {t["id"] for t in card["tracks"]}.isdisjoint({"DEMO002", "DEMO010"}) and len(card["tracks"]) == 12
    ctcf = rows["DEMO002"]
    assert ctcf["target"] == "CTCF" and ctcf["positives"] > 20 and ctcf["unseen_values"] == {}
    assert ctcf["auroc_mfd_bio"] > 0.7, ctcf
    assert ctcf["auroc_same_target_mean"] > 0.7, ctcf
    assert rows["DEMO010"]["unseen_values"] == {"release_date": "2021-01-15"}
    assert ctcf["auroc_seen"] is None   # no reference asked for
    tsv = (heldout_run / "heldout.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == TSV_COLUMNS and len(tsv) == 3


@pytest.mark.slow
def test_heldout_compares_with_the_track_seen_in_training(heldout_run, demo_data_dir, tmp_path):
    """Scoring again with `--score-only` against a reference that saw DEMO010 but not DEMO002 (a few steps only:
    this checks the column, not the model): `auroc_seen` is filled where the reference has the track and left
    empty where it does not."""
    reference = tmp_path / "ref"
    assert heldout.main(["--config", str(demo_data_dir / "config.yaml"), "--out", str(reference),
                         "--holdout-tracks", "DEMO002", *_sets(ONE_STEP), "--no-progress"]) == 0
    assert heldout.main(["--config", str(demo_data_dir / "config.yaml"), "--out", str(heldout_run),
                         "--holdout-tracks", "DEMO002", "DEMO010", *_sets(TINY), "--score-only",
                         "--reference-checkpoint", str(reference / "model"), "--no-progress"]) == 0
    rows = {r["track"]: r for r in json.loads((heldout_run / "heldout.json").read_text())["tracks"]}
    assert rows["DEMO002"]["auroc_seen"] is None
    assert 0.0 <= rows["DEMO010"]["auroc_seen"] <= 1.0


@pytest.mark.parametrize("extra,fragment", [
    (["--holdout-tracks", "NOPE"], "NOPE not in"),
    (["--holdout-tracks", *[f"DEMO{i:03d}" for i in range(1, 15)]], "nothing is left to train on"),
    (["--holdout-tracks", "DEMO002", "DEMO002"], "given twice"),
    (["--holdout-file", "EMPTY"], "lists no track ids"),
    (["--holdout-file", "ABSENT"], "does not exist"),
    (["--holdout-tracks", "DEMO002", "--score-only"], "holds no checkpoint"),
    (["--holdout-tracks", "DEMO002", "--set", "train.epochs=0"], "train.epochs"),
])
def test_heldout_bad_input_exits_2_with_one_line(demo_data_dir, tmp_path, capsys, extra, fragment):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    extra = [str(empty) if e == "EMPTY" else str(tmp_path / "absent.txt") if e == "ABSENT" else e for e in extra]
    assert heldout.main(["--config", str(demo_data_dir / "config.yaml"), "--out", str(tmp_path / "o"),
                         *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err, err


def test_heldout_refuses_a_built_store(tmp_path, capsys, demo_data_dir):
    config = tmp_path / "store.yaml"
    config.write_text(f"data:\n  store:\n    dir: {tmp_path}\nmetadata:\n  mapping: {demo_data_dir / 'mapping.yaml'}\n")
    assert heldout.main(["--config", str(config), "--out", str(tmp_path / "o"), "--holdout-tracks", "X"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.store" in err and "\n" not in err, err
