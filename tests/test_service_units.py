"""Service building blocks in-process: settings, repository verification, micro-batcher, variant windows."""
from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from service.core.batcher import MicroBatcher
from service.errors import RequestError
from service.core.genome import Genome
from service.repository import RepositoryError, load_repository
from service.settings import BUNDLED_REPOSITORY, Settings, SettingsError
from service.core.variants import variant_windows
from tests.fixtures.service import write_genome


def test_settings_defaults_and_validation():
    settings = Settings.from_env({})
    assert settings.model_repository == BUNDLED_REPOSITORY and (BUNDLED_REPOSITORY / "model_card.json").is_file()
    assert (settings.backend, settings.grpc_port, settings.auth_token) == ("embedded", 3001, None)
    assert settings.max_batch == 16 and Settings.from_env({"MFD_DEVICE": "cuda"}).max_batch == 64
    custom = Settings.from_env({"MFD_BACKEND": "Triton", "MFD_TRITON_URL": "http://triton:8000/",
                                "MFD_TRITON_PROTOCOL": "http", "MFD_MAX_INFLIGHT": "3", "MFD_AUTH_TOKEN": "t"})
    assert (custom.backend, custom.triton_url, custom.triton_protocol, custom.max_inflight, custom.auth_token,
            custom.max_batch) == ("triton", "triton:8000", "http", 3, "t", 64)
    for env in ({"MFD_BACKEND": "onnx"}, {"MFD_MAX_SEQUENCES": "0"}, {"MFD_GRPC_PORT": "x"}):
        with pytest.raises(SettingsError, match=next(iter(env))):
            Settings.from_env(env)


def test_repository_checksums_are_enforced(exported_repository, tmp_path):
    repo = load_repository(exported_repository)
    assert repo.trunk_path.is_file() and repo.card.d_tech > 0
    broken = tmp_path / "broken"
    shutil.copytree(exported_repository, broken)
    with open(broken / "mfd_head" / "1" / "model.pt", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(RepositoryError, match="sha256"):
        load_repository(broken)
    shutil.rmtree(broken / "mfd_trunk")
    with pytest.raises(RepositoryError, match="missing"):
        load_repository(broken)
    with pytest.raises(RepositoryError, match="model_card.json"):
        load_repository(tmp_path)


def test_batcher_merges_concurrent_requests_and_keeps_rows_apart():
    calls: list[int] = []

    async def trunk(tokens: np.ndarray) -> np.ndarray:
        calls.append(tokens.shape[0])
        await asyncio.sleep(0.01)
        return tokens.astype(np.float32).sum(axis=1, keepdims=True) + np.arange(1, dtype=np.float32)

    async def run():
        batcher = MicroBatcher(trunk, backend="test", max_batch=8, max_wait_s=0.005)
        inputs = [np.full((n, 4), i, dtype=np.uint8) for i, n in enumerate([1, 3, 2, 5, 1, 12])]
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.close()
        return inputs, outputs

    inputs, outputs = asyncio.run(run())
    for x, y in zip(inputs, outputs):
        assert y.shape == (x.shape[0], 1) and np.all(y[:, 0] == x.sum(axis=1))
    assert sum(calls) == 24 and max(calls) <= 8 and len(calls) < 6 + 1  # 6 requests (one split in two) merged


def test_batcher_failure_reaches_every_waiter():
    async def broken(tokens: np.ndarray) -> np.ndarray:
        raise RuntimeError("trunk exploded")

    async def run():
        batcher = MicroBatcher(broken, backend="test", max_batch=8, max_wait_s=0.005)
        results = await asyncio.gather(*(batcher.submit(np.zeros((2, 4), np.uint8)) for _ in range(3)),
                                       return_exceptions=True)
        await batcher.close()
        return results

    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in asyncio.run(run()))


def test_variant_windows_keep_the_variant_centred(tmp_path):
    genome_fixture = write_genome(tmp_path / "g.fa", {"chrA": 5000})
    genome = Genome(genome_fixture.path)
    text = genome_fixture.sequences["chrA"]
    L = 128
    pos = 2500
    snv = variant_windows(genome, "chrA", pos, text[pos - 1], "T" if text[pos - 1] != "T" else "A", L, field="v")
    assert snv.ref == text[pos - 1 - L // 2: pos - 1 + L // 2] and snv.ref[L // 2] == text[pos - 1]
    assert snv.alt[:L // 2] == snv.ref[:L // 2] and snv.alt[L // 2 + 1:] == snv.ref[L // 2 + 1:]
    deletion = variant_windows(genome, "chrA", pos, text[pos - 1:pos + 9], text[pos - 1], L, field="v")
    assert len(deletion.alt) == L and deletion.alt[L // 2 + 1:] == text[pos + 9:pos + 9 + L // 2 - 1]
    insertion = variant_windows(genome, "chrA", pos, text[pos - 1], text[pos - 1] + "GGGG", L, field="v")
    assert len(insertion.alt) == L and insertion.alt[L // 2:L // 2 + 5] == text[pos - 1] + "GGGG"
    with pytest.raises(RequestError) as err:
        variant_windows(genome, "chrA", 4990, text[4989], "A" if text[4989] != "A" else "C", L, field="variants[3]")
    assert err.value.field == "variants[3].pos"
    genome.close()


def test_batcher_waits_only_when_more_requests_are_coming():
    import time

    async def trunk(tokens: np.ndarray) -> np.ndarray:
        return tokens[:, :1].astype(np.float32)

    async def timed(active: int) -> float:
        batcher = MicroBatcher(trunk, backend="test", max_batch=8, max_wait_s=0.3, active=lambda: active)
        start = time.perf_counter()
        await batcher.submit(np.zeros((1, 4), np.uint8))
        await batcher.close()
        return time.perf_counter() - start

    assert asyncio.run(timed(1)) < 0.2    # alone in the engine: no point waiting for company
    assert asyncio.run(timed(2)) >= 0.29  # another request is on its way: wait for it
