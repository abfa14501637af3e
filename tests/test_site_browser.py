"""The leaderboard site in a real browser: headless Debian chromium driven by Playwright.

Builds the site from a small fake run (no training) and checks what only a browser can: the leaderboard
renders with its rows, a header click sorts, no image is broken, hostile names stay text and run
nothing, and the pages read at 420 px (tables scroll inside their own box, not the page).

Skips, saying why, when chromium or playwright is missing; ``.ci/run`` installs both (apt chromium, and
playwright in the dev extra), so CI runs it. ``BENCH_SITE_SCREENSHOT=PATH`` also saves a screenshot of
the index (see :func:`screenshot_index`, which made ``docs/img/leaderboard.png``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from bench import site
from tests.test_site import EVIL_IMG, EVIL_SCRIPT, make_run, msp_na_rows, unit_rows

CHROMIUM = os.environ.get("BENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EVIL_RUN = "run<img src=x onerror=window.__xss=3>"

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]' (make test does)"
)
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"chromium not found at {CHROMIUM}: apt-get install chromium (.ci/run installs it)",
        allow_module_level=True,
    )


def launch(playwright, user_data_dir: Path, width: int = 1200):
    """The system chromium with a fresh profile, no network services, fixed viewport."""
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=CHROMIUM,
        headless=True,
        args=FLAGS,
        viewport={"width": width, "height": 900},
        offline=True,
    )


def screenshot_index(
    site_dir: Path, target: Path, width: int = 1100, user_data_dir: Path | None = None
) -> Path:
    """Save a screenshot of the site's index (the first screen and its leaderboards) as a PNG."""
    import tempfile

    with sync_api.sync_playwright() as p:
        profile = Path(user_data_dir or tempfile.mkdtemp(prefix="bench-chromium-"))
        context = launch(p, profile, width)
        try:
            page = context.new_page()
            page.goto((Path(site_dir) / "index.html").resolve().as_uri())
            height = min(page.evaluate("document.documentElement.scrollHeight"), 1500)
            page.set_viewport_size({"width": width, "height": height})
            target.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(target), full_page=False)
        finally:
            context.close()
            if user_data_dir is None:
                shutil.rmtree(profile, ignore_errors=True)
    return target


METHODS = ["atom", "rodeo", EVIL_SCRIPT, EVIL_IMG, "msp"]  # msp: n/a everywhere


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A run of 5 methods (2 hostile names, one n/a) x 2 cells x 2 seeds x clean/pgd/aa; raw scores of
    atom and one hostile name on c0."""
    root = tmp_path_factory.mktemp("browser")
    values = {"atom": (0.95, 0.70, 0.68), "rodeo": (0.93, 0.75, 0.74), EVIL_SCRIPT: (0.6, 0.4, 0.4)}
    values[EVIL_IMG] = (0.8, 0.5, 0.45)
    rows = []
    for method, (clean, pgd, aa) in values.items():
        for cell in ("c0", "c1"):
            for seed in (0, 1):
                for attack, v in (("clean", clean), ("pgd", pgd), ("aa", aa)):
                    rows += unit_rows(method, cell, seed, attack, v + 0.01 * seed, run_id=EVIL_RUN)
    rows += msp_na_rows(run_id=EVIL_RUN)
    shifts = (("clean", 0.0), ("pgd", 0.8), ("aa", 0.8))
    scores = [(m, "c0", 0, a, s) for m in ("atom", EVIL_IMG) for a, s in shifts]  # few plots: a fast build
    run = make_run(root / "run", rows, scores=scores)
    started = time.perf_counter()
    result = site.build_site([run], root / "site")
    print(f"site built in {time.perf_counter() - started:.1f} s: {len(result.pages)} pages")
    return result


@pytest.fixture(scope="module")
def browser(built, tmp_path_factory):
    with sync_api.sync_playwright() as p:
        context = launch(p, tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield context
        finally:
            context.close()


def open_page(context, result, name: str, width: int = 1200):
    """Open a page; collect dialogs and script errors, which must stay empty."""
    page = context.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    events: list[str] = []
    page.on("dialog", lambda d: (events.append(f"dialog {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: events.append(f"error {e}"))
    page.goto((result.out / name).resolve().as_uri(), wait_until="load")
    return page, events


def column_values(page, table: str, index: int) -> list[str]:
    return page.eval_on_selector_all(
        f"{table} tbody tr", f"rows => rows.map(r => r.cells[{index}].getAttribute('data-sort') || '')"
    )


def test_leaderboard_renders_and_sorts(browser, built):
    page, events = open_page(browser, built, "index.html")
    table = "table.leaderboard"
    assert page.locator(f"{table} tbody tr").count() == len(METHODS)
    headers = page.locator(f"{table} thead th").all_inner_texts()
    assert [h.strip(" ↕") for h in headers] == [
        "method",
        "profile",
        "clean",
        "pgd",
        "aa",
        "worst case",
        "drop",
    ]
    # Sort by clean AUROC: descending first, n/a (msp) last; a second click ascending, n/a still last.
    page.locator(f"{table} thead th", has_text="clean").locator("button").click()
    values = column_values(page, table, 2)
    assert values[-1] == "" and [float(v) for v in values[:-1]] == sorted(
        map(float, values[:-1]), reverse=True
    )
    assert page.locator(f"{table} thead th", has_text="clean").get_attribute("aria-sort") == "descending"
    first = page.locator(f"{table} tbody tr").first.locator("th").inner_text()
    assert first.startswith("atom")  # clean 95.5 is the highest
    page.locator(f"{table} thead th", has_text="clean").locator("button").click()
    values = column_values(page, table, 2)
    assert [float(v) for v in values[:-1]] == sorted(map(float, values[:-1])) and values[-1] == ""
    # Sort by method name (text): alphabetical.
    page.locator(f"{table} thead th", has_text="method").locator("button").click()
    names = column_values(page, table, 0)
    assert names == sorted(names, key=str.lower) or names == sorted(names)
    assert events == []


def test_no_broken_image(browser, built):
    checked = 0
    for name in built.pages:
        page, events = open_page(browser, built, name)
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        assert broken == [], (name, broken)
        alts = page.evaluate("Array.from(document.images).map(i => i.alt)")
        assert all(len(a) > 30 for a in alts), name
        checked += len(alts)
        assert events == [], (name, events)
        page.close()
    assert checked >= 2 + 2 * 2  # scatter, grad evals; roc + hist per method with scores


def test_hostile_names_are_text_and_nothing_runs(browser, built):
    for name in built.pages:
        page, events = open_page(browser, built, name)
        assert page.evaluate("typeof window.__xss") == "undefined", name
        assert events == [], (name, events)
        assert page.locator("script").count() == 1, name  # only assets/sort.js
        assert page.locator("img[onerror], img[src='x']").count() == 0, name
        text = page.locator("body").inner_text()
        assert EVIL_RUN in text, name  # the run id, as text, in the provenance
        if name == "index.html":
            board = page.locator("table.leaderboard").inner_text()
            assert EVIL_SCRIPT in board and EVIL_IMG in board
        page.close()


def test_pages_read_at_420_px(browser, built):
    for name in built.pages:
        page, events = open_page(browser, built, name, width=420)
        layout = page.evaluate(
            """() => ({
                page: document.documentElement.scrollWidth,
                view: window.innerWidth,
                boxes: Array.from(document.querySelectorAll('.scroll')).map(b => ({
                    right: b.getBoundingClientRect().right, scrolls: b.scrollWidth > b.clientWidth,
                    overflow: getComputedStyle(b).overflowX})),
                font: parseFloat(getComputedStyle(document.body).fontSize),
            })"""
        )
        assert layout["page"] <= layout["view"], (name, layout["page"])  # no page-wide horizontal scroll
        assert layout["font"] >= 14
        assert all(b["right"] <= layout["view"] + 0.5 and b["overflow"] == "auto" for b in layout["boxes"]), (
            name
        )
        if name == "index.html":
            assert any(b["scrolls"] for b in layout["boxes"])  # the wide leaderboard scrolls in its box
        page.close()


def test_screenshot(browser, built, tmp_path):
    """A screenshot of the index renders (a PNG of the first screen); with BENCH_SITE_SCREENSHOT set it
    is also kept there."""
    target = Path(os.environ.get("BENCH_SITE_SCREENSHOT") or tmp_path / "leaderboard.png")
    page, _ = open_page(browser, built, "index.html", width=1100)
    page.screenshot(path=str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
