"""Render the Snakemake HTML report in headless Chromium and check the screenshot is not blank.

    python -m entcal.report results/demo/report.html results/demo/report.png

(the report itself: ``snakemake --configfile config/demo.yaml --report results/demo/report.html``).
Chromium is Debian's ``chromium`` package; it runs with the network switched off.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html: str | Path, png: str | Path, width: int = 1400, height: int = 1600, timeout: int = 120) -> Path:
    """Screenshot ``html`` (a local file) into ``png`` with headless Chromium."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                exe,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png}",
                Path(html).resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    return png


def pixel_spread(png: str | Path) -> float:
    """Standard deviation of the grey levels: about 0 for a blank page."""
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    grey = img[..., :3].mean(-1) if img.ndim == 3 else img
    return float(np.std(grey))


if __name__ == "__main__":
    out = screenshot(sys.argv[1], sys.argv[2])
    print(f"{out}: grey-level spread {pixel_spread(out):.3f}")
