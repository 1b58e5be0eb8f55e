"""`bench/bench_variants.py` at toy size (the real run is `make bench`: 1 M records): both measurements run, are
labelled for what they are (null trunk vs the bundled model) and report a peak RSS from the batch process."""
from __future__ import annotations

import json

import pytest

from bench import bench_variants


@pytest.mark.slow
def test_bench_variants_reports_streaming_and_model_rates(tmp_path, capsys):
    assert bench_variants.main(["--records", "400", "--model-records", "8", "--geometries", "1x1",
                                "--threads", "1", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    runs = {r["measure"]: r for r in report["runs"]}
    assert runs["streaming"]["trunk"] == "null" and runs["model"]["trunk"] == "bundled C=30"
    assert runs["streaming"]["records"] == 400 and runs["model"]["records"] == 8
    for run in runs.values():
        assert run["scored"] > 0 and run["variants_per_s"] > 0 and 50 < run["peak_rss_mb"] < 1024, run
    assert "NULL trunk" in out and "bundled C=30 model" in out
