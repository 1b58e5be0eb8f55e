"""mfd.Client against the real service over loopback (the `mfd_service` fixture: at most 64 windows and 16
conditions per request), compared with direct REST calls that respect those limits by hand."""
from __future__ import annotations

import random
import subprocess

import httpx
import numpy as np
import pandas as pd
import pytest

import mfd
from tests.fixtures.service import matrix, random_sequences

pytestmark = pytest.mark.slow

# 20 conditions (> the server's 16): trained tracks, never-measured combinations, and partial ones.
CONDITIONS = (["ENCFF001", "ENCFF002", {"track": "ENCFF003"}, "ENCFF004"]
              + [{"biosample": b, "lab": lab} for b in ("K562", "HepG2", "GM12878")
                 for lab in ("lab-A", "lab-B", "lab-C")]
              + [{"target": t} for t in ("CTCF", "HNF4A", "GATA1")]
              + [{"assay": "CUT&RUN", "read_depth": 30.0}, {}, {"life_stage": "child"}, {"replicates": 2}])


@pytest.fixture(scope="module")
def client(mfd_service):
    with mfd.Client(mfd_service.http_url, progress=False) as c:
        yield c


def rest(service, path: str, body: dict) -> dict:
    r = httpx.post(service.http_url + path, json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_predict_chunks_windows_and_conditions_like_direct_rest(client, mfd_service):
    assert len(CONDITIONS) == 20 and client.limits()["max_sequences"] == 64
    sequences = random_sequences(150, seed=21)  # 3 window chunks × 2 condition chunks = 6 requests
    for biological_only, n in ((False, 150), (True, 70)):
        df = client.predict(sequences[:n], conditions=CONDITIONS, biological_only=biological_only)
        assert len(df) == n * 20 and list(df["window"].unique()) == list(range(n))
        assert df.groupby("window")["condition"].apply(list).map(lambda c: c == list(range(20))).all()
        assert df.loc[df.condition == 2, "condition_name"].iloc[0] == "ENCFF003"
        assert df.loc[df.condition == 4, "condition_name"].iloc[0] == "biosample=K562,lab=lab-A"
        # the same numbers from REST requests cut by hand at other boundaries (50 windows, 10 conditions)
        direct = [[rest(mfd_service, "/predict", {"sequences": sequences[s:min(s + 50, n)],
                                                  "conditions": CONDITIONS[k:k + 10],
                                                  "biological_only": biological_only}) for k in (0, 10)]
                  for s in range(0, n, 50)]
        for column in ("logit", "logit_bio", "logit_tech", "probability", "bias"):
            got = df.pivot(index="window", columns="condition", values=column).to_numpy()
            want = np.vstack([np.hstack([matrix(r, column) for r in row]) for row in direct])
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=column)
        np.testing.assert_allclose(df.logit, df.logit_bio + df.logit_tech + df.bias, atol=1e-4)
        assert (df.logit_tech == 0).all() == biological_only
        assert df.logit_bio.std() > 1e-3  # the windows differ: a mix-up of rows would show


def test_predict_intervals_and_ids(client, mfd_service, service_genome, capsys):
    seq_len = client.metadata()["seq_len"]
    starts = random.Random(3).sample(range(0, 30000 - seq_len), 70)
    intervals = pd.DataFrame({"chrom": "chr1", "start": starts, "end": [s + seq_len for s in starts]})
    df = client.predict(intervals=intervals, conditions=["ENCFF002", {"lab": "lab-C"}])
    assert len(df) == 140 and list(df.columns[:5]) == ["window", "id", "chrom", "start", "end"]
    assert (df.drop_duplicates("window").start.to_numpy() == np.array(starts)).all()
    by_sequence = client.predict([service_genome.fetch("chr1", s, s + seq_len) for s in starts],
                                 conditions=["ENCFF002", {"lab": "lab-C"}], sequence_ids=[f"w{s}" for s in starts])
    np.testing.assert_allclose(df.logit, by_sequence.logit, atol=1e-5)
    assert "window" not in capsys.readouterr().err  # no bar unless asked (or on a terminal)
    with mfd.Client(mfd_service.http_url, progress=True) as loud:
        loud.predict(intervals=intervals, conditions=["ENCFF002"])
    assert "70/70" in capsys.readouterr().err  # 2 requests (64 + 6 windows), one bar
    assert by_sequence.id.iloc[-1] == f"w{starts[-1]}" and df.id.iloc[0] == f"chr1:{starts[0]}-{starts[0] + seq_len}"


def test_errors_name_the_callers_own_index(client):
    sequences = random_sequences(100, seed=4)
    sequences[90] = sequences[90][:10] + "R" + sequences[90][11:]  # in the second request (windows 64..99)
    with pytest.raises(mfd.ServiceError) as caught:
        client.predict(sequences, conditions=["ENCFF001"])
    assert caught.value.status == 422 and caught.value.field == "sequences[90]" and "position 10" in str(caught.value)
    with pytest.raises(mfd.ServiceError) as caught:
        client.predict(sequences[:2], conditions=CONDITIONS[:17] + [{"biosample": "Liver?"}])
    assert caught.value.field.startswith("conditions[17]") and "K562" in caught.value.allowed
    with pytest.raises(ValueError, match="exactly one"):
        client.predict(conditions=["ENCFF001"])
    one = client.predict(sequences[0], conditions="ENCFF001")  # a bare window and a bare condition
    assert len(one) == 1 and one.condition_name[0] == "ENCFF001"


def _write_vcf(path, genome, positions: list[int]) -> list[dict]:
    """A VCF as users have them (no ##contig lines), with a multi-allelic record and a symbolic allele."""
    chrom = genome.sequences["chr1"]
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    expected = []
    for n, pos in enumerate(positions):
        ref = chrom[pos - 1]
        alts = [b for b in "ACGT" if b != ref][: 2 if n == 0 else 1]
        lines.append(f"chr1\t{pos}\trs{n}\t{ref}\t{','.join(alts)}\t.\t.\t.")
        expected += [{"chrom": "chr1", "pos": pos, "ref": ref, "alt": a} for a in alts]
    lines.append(f"chr1\t{positions[-1] + 7}\tsv1\t{chrom[positions[-1] + 6]}\t<DEL>\t.\t.\tSVTYPE=DEL")
    path.write_text("\n".join(lines) + "\n")
    return expected


def test_predict_variants_from_vcf_bgzip_and_bcf_match_rest(client, mfd_service, service_genome, tmp_path):
    positions = sorted(random.Random(5).sample(range(5000, 25000), 69))
    plain = tmp_path / "in.vcf"
    expected = _write_vcf(plain, service_genome, positions)  # 70 scorable alleles: 2 requests of 64 + 6
    subprocess.run(["bgzip", "-k", str(plain)], check=True)
    bcf = tmp_path / "in.bcf"
    declared = tmp_path / "declared.vcf"  # BCF needs its contigs declared: the header as bcftools wants it
    text = plain.read_text().split("\n", 1)
    declared.write_text(text[0] + "\n##contig=<ID=chr1,length=30000>\n"
                        '##INFO=<ID=SVTYPE,Number=1,Type=String,Description="SV type">\n' + text[1])
    subprocess.run(["bcftools", "view", "-Ob", "-o", str(bcf), str(declared)], check=True, capture_output=True)
    conditions = ["ENCFF001", {"biosample": "HepG2", "lab": "lab-A"}]
    ensemble = {"shifts": 2, "strands": 2, "geometry": "centred"}
    want = rest(mfd_service, "/predict_variants", {"variants": expected[:64], "conditions": conditions,
                                                   "ensemble": ensemble})["results"]
    want += rest(mfd_service, "/predict_variants", {"variants": expected[64:], "conditions": conditions,
                                                    "ensemble": ensemble})["results"]
    delta = np.array([[e["delta_logit_bio"] for e in v["effects"]] for v in want])
    for source in (plain, str(plain) + ".gz", bcf):
        df = client.predict_variants(source, conditions=conditions, ensemble=ensemble)
        assert len(df) == 70 * 2, source
        assert df[["chrom", "pos", "ref", "alt"]].drop_duplicates().to_dict("records") == expected
        assert df.id.iloc[0] == "rs0:" + expected[0]["alt"] and df.id.iloc[-1] == "rs68"
        np.testing.assert_allclose(df.pivot(index="variant", columns="condition", values="delta_logit_bio"),
                                   delta, atol=1e-5)
        assert [s["reason"].startswith("ALT '<DEL>'") for s in df.attrs["skipped"]] == [True]
    from_frame = client.predict_variants(pd.DataFrame(expected[:5]), conditions=conditions, ensemble=ensemble)
    np.testing.assert_allclose(from_frame.delta_logit, df.delta_logit[:10], atol=1e-5)
    assert np.abs(delta).max() > 0
    with pytest.raises(ValueError, match="lacks column"):
        client.predict_variants(pd.DataFrame({"chrom": ["chr1"], "pos": [5]}), conditions=conditions)


def test_metadata_and_tracks(client, mfd_service):
    assert client.metadata() == httpx.get(mfd_service.http_url + "/metadata").json()
    assert list(client.tracks().track) == ["ENCFF001", "ENCFF002", "ENCFF003", "ENCFF004"]


@pytest.fixture(scope="module")
def model(exported_repository, service_genome):
    """The repository the `mfd_service` server serves, loaded in this process with the same genome."""
    with mfd.Model.load(exported_repository, fasta=service_genome.path, progress=False) as m:
        yield m


def test_model_load_equals_the_client_over_http(model, client, service_genome):
    assert model.metadata()["seq_len"] == client.metadata()["seq_len"] and "mfd.Model(" in repr(model)
    assert model.limits()["max_conditions"] > 20 > client.limits()["max_conditions"]  # other chunking, same numbers
    sequences = random_sequences(70, seed=22)
    for kwargs in ({}, {"biological_only": True}, {"reverse_complement": True}):
        here, there = model.predict(sequences, conditions=CONDITIONS, **kwargs), client.predict(
            sequences, conditions=CONDITIONS, **kwargs)
        pd.testing.assert_frame_equal(here, there, check_exact=False, rtol=1e-5, atol=1e-5)
    intervals = [("chr1", 3000 + 97 * i, 3000 + 97 * i + model.metadata()["seq_len"]) for i in range(3)]
    pd.testing.assert_frame_equal(model.predict(intervals=intervals, conditions=CONDITIONS[:3]),
                                  client.predict(intervals=intervals, conditions=CONDITIONS[:3]),
                                  check_exact=False, rtol=1e-5, atol=1e-5)
    chrom = service_genome.sequences["chr1"]
    variants = pd.DataFrame([{"chrom": "chr1", "pos": p, "ref": chrom[p - 1], "alt": "A" if chrom[p - 1] != "A"
                              else "G"} for p in (8000, 9000, 15000)])
    pd.testing.assert_frame_equal(model.predict_variants(variants, conditions=CONDITIONS[:4]),
                                  client.predict_variants(variants, conditions=CONDITIONS[:4]),
                                  check_exact=False, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method,kwargs", [("ism", {"window": (1000, 1004)}),
                                           ("gradient_x_input", {"parts": ["logit_bio", "logit"]}),
                                           ("integrated_gradients", {"steps": 4, "window": (1080, 1100)})])
def test_model_and_client_attribute_alike(model, client, mfd_service, method, kwargs):
    sequences = random_sequences(2, seed=23)
    conditions = CONDITIONS if method == "ism" else CONDITIONS[:3]   # 20 > the server's 16: two requests
    here = model.attribute(sequences, conditions=conditions, method=method, **kwargs)
    there = client.attribute(sequences, conditions=conditions, method=method, **kwargs)
    width = kwargs.get("window", (0, 2177))[1] - kwargs.get("window", (0, 2177))[0]
    parts = tuple(kwargs.get("parts", ("logit", "logit_bio", "logit_tech")))
    assert here.axes == ("window", "condition", "part", "position", "base") and here.parts == parts
    assert here.maps.shape == there.maps.shape == (2, len(conditions), len(parts), width, 4)
    np.testing.assert_allclose(here.maps, there.maps, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(here.score, there.score, rtol=1e-5, atol=1e-5)
    assert np.abs(here.maps).max() > 1e-3 and here.sequences == there.sequences and here.ids == ["0", "1"]
    assert list(here.positions) == list(range(*kwargs.get("window", (0, 2177))))
    # the arrays are /attribute's, picked by name (ism: the last condition came in the second request)
    last = len(conditions) - 1
    direct = rest(mfd_service, "/attribute", {"sequences": sequences[1:], "conditions": conditions[last:],
                                              "method": method, **{k: (dict(zip(("start", "end"), v))
                                                                       if k == "window" else v)
                                                                   for k, v in kwargs.items()}})
    np.testing.assert_allclose(there.map(parts[0], window="1", condition=last),
                               direct["results"][0]["maps"][parts[0]][0], atol=1e-5)


def test_model_errors_are_the_servers(model, client):
    sequences = random_sequences(3, seed=24)
    sequences[2] = sequences[2][:5] + "X" + sequences[2][6:]
    for api in (model, client):
        with pytest.raises(mfd.ServiceError) as caught:
            api.predict(sequences, conditions=["ENCFF001"])
        assert (caught.value.status, caught.value.field) == (422, "sequences[2]")
        with pytest.raises(mfd.ServiceError) as caught:
            api.attribute(sequences[:1], conditions=["ENCFF001"], method="saliency")
        assert (caught.value.status, caught.value.field) == (422, "method") and "ism" in caught.value.allowed
        with pytest.raises(mfd.ServiceError) as caught:
            api.attribute(sequences[:1], conditions=["ENCFF001"], window=(5, 4000))
        assert caught.value.field == "window.end"


def test_readme_example_runs(mfd_service, service_genome, tmp_path, monkeypatch):
    """The README's `import mfd` block, run as written against this session's server and genome."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## From Python: `import mfd`", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "http://127.0.0.1:3000" in code and "build/demo_data/genome.fa" in code
    code = code.replace("http://127.0.0.1:3000", mfd_service.http_url)
    code = code.replace("build/demo_data/genome.fa", str(service_genome.path))
    code = code.replace('"model_repository"', repr(str(Path(__file__).resolve().parents[1] / "model_repository")))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert len(namespace["scores"]) == 4 and (namespace["bio"].logit_tech == 0).all()
    assert (namespace["scores"].logit_tech != 0).any() and len(namespace["regions"]) == 1
    effects = namespace["effects"]
    assert len(effects) == 2 and set(effects.id) == {"my-snv"} and np.isfinite(effects.delta_logit).all()
    assert (tmp_path / "my-snv.png").stat().st_size > 10_000
    assert namespace["attr"].maps.shape == (1, 1, 3, 40, 4) and np.abs(namespace["attr"].maps).max() > 0
    assert (tmp_path / "logos.png").stat().st_size > 10_000
    assert namespace["bio_map"].shape == (namespace["meta"]["seq_len"], 4)
    assert len(namespace["local"]) == 2 and np.isfinite(namespace["local"].logit).all()
