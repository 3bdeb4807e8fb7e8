"""Headless Debian Chromium driven by Selenium (Debian's chromedriver, never a downloaded browser)."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator

from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService

from .procs import require_tool

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",
]
WEBRTC_FLAGS = ["--allow-loopback-in-peer-connection", "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream"]


@contextlib.contextmanager
def chromium(extra_flags: list[str] | None = None, *, mute_audio: bool = True) -> Iterator[webdriver.Chrome]:
    """`mute_audio=False` lets the page play sound (to a null sink here), so WebRTC's receive
    statistics measure it (audio level, energy)."""
    profile = tempfile.mkdtemp(prefix="mv-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = require_tool("/usr/bin/chromium")
    for flag in [*CHROMIUM_FLAGS, *(["--mute-audio"] if mute_audio else []), *(extra_flags or []),
                 f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=DriverService(require_tool("/usr/bin/chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
