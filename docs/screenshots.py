"""Screenshots of TensorBoard's dashboards for a logdir, taken in headless Chromium: what a user sees in Time Series,
Custom Scalars, Images and HPARAMS (README: TensorBoard). A development aid, not part of the package; it needs
Playwright for Python and a Chromium of the system (neither is a dependency of spectral-gan):

    apt-get install chromium                      # Debian: /usr/bin/chromium
    python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
    .venv/bin/tensorboard --logdir runs --port 6006 &
    /tmp/pw/bin/python docs/screenshots.py --url http://localhost:6006 --out docs/tensorboard [--filter eval]

Nothing is downloaded: Playwright drives the Chromium at --chromium, started with the flags that keep it off the
network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://localhost:6006")
    p.add_argument("--out", type=Path, default=Path("docs/tensorboard"))
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--filter", default="eval", help="Time Series tag filter for the second Time Series shot")
    p.add_argument("--wait", type=float, default=6.0, help="seconds to let a dashboard load its data")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    wait_ms = int(args.wait * 1000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1100})

        def shot(name: str, full: bool = False) -> None:
            page.wait_for_timeout(wait_ms)
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=full)
            print(args.out / f"{name}.png")

        page.goto(f"{args.url}/#timeseries")
        shot("time_series")
        box = page.locator("input[placeholder*='ilter tags']").first  # the tag filter box (not the runs filter)
        if box.count():
            box.fill(args.filter)
            box.press("Escape")  # close the autocomplete list
            shot(f"time_series_{args.filter.replace('/', '_')}")
        # The Scalars and Images dashboards show a tag's description behind the info button of its card (Time Series
        # does not show descriptions).
        for name in ("scalars", "images"):
            page.goto(f"{args.url}/#{name}")
            page.wait_for_timeout(wait_ms)
            info = page.locator("paper-icon-button[title='Show summary description']:visible").first
            if info.count():
                info.click(timeout=5000)
            shot(name)
        page.goto(f"{args.url}/#custom_scalars")
        page.wait_for_timeout(wait_ms)
        # A per-layer chart's legend: which marker is which tag.
        matches = page.locator("text=Matches (2) >> visible=true").first
        if matches.count():
            matches.click(timeout=5000)
        shot("custom_scalars", full=True)
        page.goto(f"{args.url}/#hparams")
        shot("hparams")
        browser.close()


if __name__ == "__main__":
    main()
