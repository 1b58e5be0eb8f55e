"""The docs page at `/`: Swagger UI from the swagger-ui-py wheel (no CDN), markdown rendered, examples that run.

Headless chromium is driven over the DevTools protocol (`--remote-debugging-pipe`: NUL-separated JSON on fds
3 and 4, no websocket library needed): it opens `/`, expands POST /predict, presses "Execute" on the shown
example and must see a 200, with every request of the page going to the server itself.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.service import SEQ_LEN

pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class DevTools:
    """A minimal Chrome DevTools Protocol client over chromium's debugging pipe."""

    def __init__(self, chromium: str, profile: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_fds() -> None:  # chromium reads commands on fd 3 and writes answers on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.process = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                         "--remote-debugging-pipe", "about:blank"],
                                        preexec_fn=wire_fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def _read_message(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read_message()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for: {expression}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


PREDICT_BLOCK = ("[...document.querySelectorAll('.opblock-post')].find(b => "
                 "b.querySelector('.opblock-summary-path')?.textContent.trim() === '/predict')")


def test_docs_page_executes_the_predict_example_in_chromium(mfd_service, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (scripts/install_tools.sh installs it)"
    browser = DevTools(chromium, tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        browser.session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.send("Network.enable")
        browser.send("Page.navigate", url=f"{mfd_service.http_url}/")
        browser.wait_for(PREDICT_BLOCK + " !== undefined")
        # markdown rendered: **experimental conditions** is bold text, not asterisks
        assert browser.evaluate("document.querySelector('.info .description strong')?.textContent") \
            == "experimental conditions"
        assert "**" not in browser.evaluate("document.querySelector('.info .description').textContent")
        browser.evaluate(PREDICT_BLOCK + ".querySelector('.opblock-summary-control').click()")
        # tryItOutEnabled: the example is in the editable body at once; press the "Try it out" button otherwise
        browser.wait_for(f"!!{PREDICT_BLOCK}.querySelector('.try-out__btn, .execute')")
        browser.evaluate(f"(() => {{ const b = {PREDICT_BLOCK}.querySelector('.try-out__btn:not(.cancel)');"
                         " if (b) b.click(); }})()")
        body = json.loads(browser.wait_for(f"{PREDICT_BLOCK}.querySelector('textarea.body-param__text')?.value"))
        assert len(body["sequences"][0]) == SEQ_LEN
        browser.wait_for(f"!!{PREDICT_BLOCK}.querySelector('.execute')")
        browser.evaluate(f"{PREDICT_BLOCK}.querySelector('.execute').click()")
        status = browser.wait_for(f"{PREDICT_BLOCK}.querySelector('.live-responses-table tbody .response-col_status')"
                                  "?.textContent.trim()")
        answer = browser.evaluate(f"{PREDICT_BLOCK}.querySelector('.live-responses-table .microlight, "
                                  ".live-responses-table pre')?.textContent")
        assert status.startswith("200"), (status, answer)
        assert '"probability"' in answer
        urls = [e["params"]["request"]["url"] for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"]
        assert any(u.endswith("/docs.json") for u in urls) and any("swagger-ui-bundle.js" in u for u in urls)
        assert all(u.startswith(mfd_service.http_url) or u.startswith("data:") for u in urls), urls
    finally:
        browser.close()


def test_every_served_example_runs_as_written(mfd_service):
    spec = httpx.get(f"{mfd_service.http_url}/docs.json", timeout=30).json()
    ran = 0
    for path in ("/predict", "/predict_variants"):
        examples = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["examples"]
        assert examples, path
        for name, example in examples.items():
            response = httpx.post(f"{mfd_service.http_url}{path}", json=example["value"], timeout=60)
            assert response.status_code == 200, (path, name, response.text[:500])
            ran += 1
    predict = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert {"track", "never_measured", "biological_only"} <= set(predict) and ran >= 4
    assert all(len(s) == SEQ_LEN for s in predict["track"]["value"]["sequences"])


def test_docs_assets_come_from_the_wheel(mfd_service):
    page = httpx.get(f"{mfd_service.http_url}/", timeout=30)
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
    script = httpx.get(f"{mfd_service.http_url}/docs-assets/swagger-ui-bundle.js", timeout=30)
    assert script.status_code == 200 and len(script.content) > 100_000
