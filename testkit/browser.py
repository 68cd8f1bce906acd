"""A real headless Chromium driven over the DevTools protocol (CDP), with aiohttp's WebSocket client.

No driver binary and no npm package: Debian's `chromium` alone (scripts/test.sh installs it). The
test talks to one page target: navigate, evaluate JavaScript, answer HTTP auth, take screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",  # the console's player starts muted anyway
    "--window-size=1280,860",
]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One Chromium process with a fresh profile and one page; every call blocks until CDP answers."""

    def __init__(self, profile: Path) -> None:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium is not installed: apt-get install -y chromium (scripts/test.sh does)")
        profile.mkdir(parents=True, exist_ok=True)
        self.log_path = profile.parent / "chromium.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 -- the child writes it for its whole life
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start:\n{self.log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        self.port = int(port_file.read_text().splitlines()[0])
        self.loop = asyncio.new_event_loop()
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.loop.run_until_complete(self._connect())

    async def _connect(self) -> None:
        self.session = aiohttp.ClientSession()
        deadline = time.monotonic() + 15
        while True:
            async with self.session.get(f"http://127.0.0.1:{self.port}/json/list") as resp:
                targets = await resp.json()
            pages = [t for t in targets if t.get("type") == "page"]
            if pages or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        for domain in ("Page", "Runtime"):
            await self._call(f"{domain}.enable", {})

    async def _recv(self, timeout: float) -> dict[str, Any]:
        assert self.ws is not None
        msg = await self.ws.receive(timeout=timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"CDP connection ended: {msg.type}; chromium log: {self.log_path}")
        return dict(json.loads(msg.data))

    async def _call(self, method: str, params: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        assert self.ws is not None
        mid = next(self._ids)
        await self.ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            doc = await self._recv(max(0.1, deadline - time.monotonic()))
            if doc.get("id") == mid:
                if "error" in doc:
                    raise RuntimeError(f"CDP {method}: {doc['error']}")
                return dict(doc.get("result", {}))
            if "method" in doc:
                self.events.append(doc)

    async def _event(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, doc in enumerate(self.events):
                if doc["method"] == name:
                    return dict(self.events.pop(i)["params"])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no CDP event {name} within {timeout}s")
            try:
                doc = await self._recv(remaining)
            except TimeoutError:
                continue
            if "method" in doc:
                self.events.append(doc)

    # ------------------------------------------------------------ the blocking API the tests use

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        return self.loop.run_until_complete(self._call(method, params or {}, timeout))

    def event(self, name: str, timeout: float = 15) -> dict[str, Any]:
        return self.loop.run_until_complete(self._event(name, timeout))

    def navigate(self, url: str, wait_load: bool = True) -> None:
        self.events = [e for e in self.events if e["method"] != "Page.loadEventFired"]
        self.call("Page.navigate", {"url": url})
        if wait_load:
            self.event("Page.loadEventFired", 20)

    def eval(self, expression: str, timeout: float = 30) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise); raises on a JS exception."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 15, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = self.eval(expression)
            if last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what or expression} (last: {last!r})")

    def screenshot(self, path: Path, selector: str | None = None) -> None:
        params: dict[str, Any] = {"format": "png"}
        if selector:
            box = self.eval(
                f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                " return [r.x + scrollX, r.y + scrollY, r.width, r.height]; })()"
            )
            params["clip"] = {"x": box[0], "y": box[1], "width": box[2], "height": box[3], "scale": 1}
        else:  # the whole page, beyond the window
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        async def shut() -> None:
            if self.ws is not None:
                await self.ws.close()
            if self.session is not None:
                await self.session.close()

        try:
            self.loop.run_until_complete(shut())
        finally:
            self.loop.close()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log.close()


def answer_auth(browser: Browser, url: str, username: str, password: str, seconds: float) -> list[dict[str, Any]]:
    """Open `url` with request interception on (Fetch.enable first): for `seconds`, let every request
    through and answer HTTP auth challenges with these credentials; returns the challenges seen."""

    async def run() -> list[dict[str, Any]]:
        challenges: list[dict[str, Any]] = []
        assert browser.ws is not None
        # Page.navigate answers only once the paused request goes on: send it without waiting.
        await browser.ws.send_str(
            json.dumps({"id": next(browser._ids), "method": "Page.navigate", "params": {"url": url}})
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pending = [e for e in browser.events if e["method"].startswith("Fetch.")]
            browser.events = [e for e in browser.events if not e["method"].startswith("Fetch.")]
            if not pending:
                try:
                    doc = await browser._recv(max(0.05, deadline - time.monotonic()))
                except TimeoutError:
                    continue
                if "method" in doc:
                    browser.events.append(doc)
                continue
            for doc in pending:
                params = doc["params"]
                if doc["method"] == "Fetch.requestPaused":
                    await browser._call("Fetch.continueRequest", {"requestId": params["requestId"]})
                elif doc["method"] == "Fetch.authRequired":
                    challenges.append(params)
                    response = {"response": "ProvideCredentials", "username": username, "password": password}
                    await browser._call(
                        "Fetch.continueWithAuth", {"requestId": params["requestId"], "authChallengeResponse": response}
                    )
        return challenges

    return browser.loop.run_until_complete(run())
