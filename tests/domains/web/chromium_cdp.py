"""A minimal headless-Chromium driver over the Chrome DevTools Protocol on a pipe (for the Web browser test).

``--remote-debugging-pipe`` makes Chromium read CDP commands from fd 3 and write replies to fd 4,
each message JSON followed by a NUL byte, so no websocket library (or playwright) is needed. One
browser serves the whole episode: navigating, clicking a link with a real DOM ``click()``, filling
and submitting the search form, reading the DOM back, and taking a screenshot.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)


class Chromium:
    """One headless Chromium, driven over a CDP pipe; ``close()`` ends it."""

    def __init__(self, width: int = 1100, height: int = 900, timeout: float = 30.0) -> None:
        if CHROMIUM is None:
            raise RuntimeError("no chromium on PATH")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="cmat-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def child_fds() -> None:  # the pipe ends become fds 3 (commands) and 4 (replies) in chromium
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self._proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, close_fds=False)  # fds 3 and 4 are made inheritable by dup2
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self._session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    # ---------------------------------------------------------------- protocol
    def send(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply (events in between are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise TimeoutError(method)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    # ---------------------------------------------------------------- browsing
    def _wait_for(self, old_url: str | None) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            state = self.evaluate("document.readyState + ' ' + location.href") or ""
            ready, _, url = state.partition(" ")
            if ready == "complete" and url != old_url and url != "about:blank":
                return
            time.sleep(0.02)
        raise TimeoutError(f"page after {old_url} did not load")

    def goto(self, url: str) -> None:
        """Navigate to ``url`` and wait for the page."""
        old = self.evaluate("location.href")
        self.send("Page.navigate", session=True, url=url)
        self._wait_for(old)

    def click(self, text: str) -> None:
        """Click the link whose text is ``text`` (case-insensitive), as a user would, and wait for the next page."""
        old = self.evaluate("location.href")
        found = self.evaluate(
            "(() => { const want = WANT.toLowerCase();"
            " const a = [...document.querySelectorAll('a[data-el]')].find(e => e.textContent.toLowerCase() === want);"
            " if (!a) return false; a.click(); return true; })()".replace("WANT", json.dumps(text)))
        if not found:
            raise LookupError(f"no link {text!r} on {old}")
        self._wait_for(old)

    def search(self, query: str) -> None:
        """Type ``query`` into the search box and press the Search button."""
        old = self.evaluate("location.href")
        self.evaluate("(() => { document.querySelector('#search_input').value = QUERY;"
                      " document.querySelector('button[data-el=search]').click(); })()".replace("QUERY", json.dumps(query)))
        self._wait_for(old)

    def html(self) -> str:
        """The current DOM as HTML."""
        return self.evaluate("document.documentElement.outerHTML")

    def screenshot(self, path: str) -> None:
        """Save a PNG of the viewport (the full page height)."""
        height = int(self.evaluate("document.documentElement.scrollHeight") or 900)
        data = self.send("Page.captureScreenshot", session=True, format="png",
                         clip={"x": 0, "y": 0, "width": 1100, "height": min(height, 2000), "scale": 1},
                         captureBeyondViewport=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self) -> None:
        """End the browser (idempotent)."""
        if self._proc.poll() is None:
            try:
                self.send("Browser.close")
            except (RuntimeError, TimeoutError, OSError):
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)
