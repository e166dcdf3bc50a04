"""Headless Chromium driven through ChromeDriver's W3C WebDriver HTTP API, standard library only
(Debian's `chromium` and `chromium-driver`, which scripts/install-system-deps.sh installs with --test)."""
import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from mqtt_broker import free_port

# Headless as root in a container, with no calls home (the build machines are offline).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000"]


class Browser(object):
    """One Chromium session: ``open(url)``, ``run(js)``, ``screenshot(path)``, ``quit()``."""

    def __init__(self, profile):
        driver = shutil.which("chromedriver")
        binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if not driver or not binary:
            pytest.skip("chromium and chromedriver not installed (scripts/install-system-deps.sh --test)")
        self.base = "http://127.0.0.1:%d" % free_port()
        self.proc = subprocess.Popen([driver, "--port=%s" % self.base.rsplit(":", 1)[1]],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        options = {"binary": binary, "args": FLAGS + ["--user-data-dir=%s" % profile]}
        # eager: the page counts as loaded at DOMContentLoaded (its live stream never ends).
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "pageLoadStrategy": "eager",
                                                 "goog:chromeOptions": options}}}
        try:
            self.session = self._call("POST", "/session", caps)["sessionId"]
        except Exception:
            self.proc.kill()
            raise

    def _call(self, method, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read().decode("utf-8"))["value"]
        except urllib.error.HTTPError as exc:
            raise RuntimeError("webdriver %s %s: %s" % (method, path, exc.read().decode("utf-8")[:500]))

    def open(self, url):
        self._call("POST", "/session/%s/url" % self.session, {"url": url})

    def run(self, script, *args):
        """The value of ``script`` (a function body: use return) in the page."""
        return self._call("POST", "/session/%s/execute/sync" % self.session,
                          {"script": script, "args": list(args)})

    def wait(self, script, timeout=30.0, every=0.2):
        """Poll ``script`` until it returns something true; that value (or AssertionError)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for: %s (last %r)" % (script, value))
            time.sleep(every)

    def screenshot(self, path):
        png = base64.b64decode(self._call("GET", "/session/%s/screenshot" % self.session))
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            os.makedirs(folder)
        with open(path, "wb") as f:
            f.write(png)
        return path

    def quit(self):
        try:
            self._call("DELETE", "/session/%s" % self.session, timeout=20)
        except Exception:  # noqa: the driver goes anyway
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
