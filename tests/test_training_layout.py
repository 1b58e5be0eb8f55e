"""The training package's shape (docs/contract.md, issue 16): contract facts in one home, layers without import
cycles, commands that are only commands, atomic publication that leaves no half-written artifact."""
from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mfd_common import geometry, numeric, publish
from mfd_common.card import CARD_FILENAME, ModelCard
from training.model.checkpoint import load_checkpoint
from training.model.network import ModelConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINING = REPO_ROOT / "training"
COMMANDS = {"train", "evaluate", "export", "import_reference", "build_store", "demo_data", "triton_config", "report",
            "heldout", "enhancer_prediction", "rare_variant_enrichment"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """training.* modules `path` imports, at any depth (lazy imports inside functions count too)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("training"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("training"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in TRAINING.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_the_training_modules_import_each_other_without_a_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " → ".join(trail[trail.index(nxt):] + [nxt]))
            if state.get(nxt) is None:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_commands_are_only_commands_and_libraries_have_no_command_line():
    graph = _graph()
    for path in TRAINING.rglob("*.py"):
        name = _module_name(path)
        text = path.read_text()
        is_command = name.count(".") == 1 and name.split(".")[1] in COMMANDS
        assert ("argparse" in text) == is_command, f"{name}: argparse belongs in the commands only"
        commands_imported = {m for m in graph[name] if m.count(".") == 1 and m.split(".")[1] in COMMANDS}
        assert not commands_imported, f"{name} imports the command module(s) {commands_imported}"


def test_every_training_and_contract_module_names_its_layer_first():
    layers = {"data": "data", "model": "model", "evaluation": "evaluation", "reference": "reference",
              "repository": "export"}
    for path in TRAINING.rglob("*.py"):
        parts = path.relative_to(TRAINING).parts
        layer = layers[parts[0]] if len(parts) > 1 else "commands"
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if path.parent.name in ("evaluation",) and docstring.startswith("Training layer (analysis)"):
            continue  # the paper's analyses: evaluation of a trained model, named for what they analyse
        assert docstring.startswith(f"Training layer ({layer}): "), f"{path}: {docstring[:60]!r}"
    for path in (REPO_ROOT / "mfd_common").glob("*.py"):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert docstring.startswith("Contract (mfd_common"), f"{path}: {docstring[:60]!r}"


def test_the_commands_users_type_still_answer():
    for command in sorted(COMMANDS):
        proc = subprocess.run([sys.executable, "-m", f"training.{command}", "--help"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage:" in proc.stdout, (command, proc.stderr[-500:])


def test_window_geometry_has_one_name_per_length_and_the_model_agrees_with_it():
    assert (geometry.WINDOW_BASES, geometry.DINUCLEOTIDE_POSITIONS, geometry.BIN_SIZE) == (2177, 2176, 128)
    assert geometry.positions_in_window(geometry.WINDOW_BASES, 2) == geometry.DINUCLEOTIDE_POSITIONS
    assert geometry.bases_for_positions(geometry.DINUCLEOTIDE_POSITIONS, 2) == geometry.WINDOW_BASES
    assert geometry.positions_in_window(2177, 1) == 2177
    cfg = ModelConfig()
    assert (cfg.positions, cfg.window_bases, cfg.bin_size) == (2176, 2177, 128)
    assert not hasattr(cfg, "seq_len")


def test_a_checkpoint_written_with_the_old_seq_len_name_still_loads(tmp_path, tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    data = json.loads((copy / CARD_FILENAME).read_text())
    data["config"]["model"]["seq_len"] = data["config"]["model"].pop("positions")   # as written before the rename
    ModelCard.from_dict(data).save(copy / CARD_FILENAME)
    loaded, card = load_checkpoint(copy)
    assert loaded.cfg == model.cfg and card.window_bases == model.cfg.window_bases == 2177


def test_numeric_range_is_six_training_standard_deviations_and_refuses_inf_and_nan():
    assert numeric.numeric_range(10.0, 2.0) == (-2.0, 22.0)
    assert numeric.standard_score_in_range(6.0) and numeric.standard_score_in_range(-6.0)
    assert not numeric.standard_score_in_range(6.5)
    assert not numeric.standard_score_in_range(float("nan")) and not numeric.standard_score_in_range(float("inf"))


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_publish_replaces_a_file_and_a_folder_whole_and_leaves_nothing_staged(tmp_path):
    target = tmp_path / "card.json"
    target.write_text("old")
    publish.write_atomically(target, "new")
    assert target.read_text() == "new" and _siblings(target) == ["card.json"]

    folder = tmp_path / "repo"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "old.txt").write_text("old")
    with publish.staged(folder, directory=True) as work:
        assert work.parent == folder.parent and work.is_dir() and work != folder
        (work / "b").mkdir()
        (work / "b" / "new.txt").write_text("new")
        assert (folder / "a" / "old.txt").is_file()   # readers still see the old folder while the new one builds
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == ["b", "b/new.txt"]
    assert _siblings(folder) == ["card.json", "repo"]


def test_a_failed_build_leaves_the_old_artifact_and_no_staging_behind(tmp_path):
    target = tmp_path / "train_state.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with publish.staged(target) as work:
            work.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and _siblings(target) == ["train_state.pt"]

    # what a killed writer left under the staging name is cleared by the next attempt, not published
    stale = target.with_name(f".{target.name}{publish.PARTIAL_SUFFIX}")
    stale.write_bytes(b"killed mid-write")
    with publish.staged(target) as work:
        assert not work.exists()
        work.write_bytes(b"new")
    assert target.read_bytes() == b"new" and _siblings(target) == ["train_state.pt"]


def test_a_resumable_build_publishes_its_partial_folder(tmp_path):
    final = tmp_path / "labels"
    partial = publish.partial_path(final)
    assert partial == tmp_path / "labels.partial"
    partial.mkdir()
    (partial / "meta.json").write_text("{}")
    publish.publish(partial, final)
    assert (final / "meta.json").is_file() and not partial.exists()
