"""Opens the orchestrator's page in headless Chromium, speaks a sentence and
prints what the page's own diagnostics counted, as one JSON line.

Usage: browser_page.py PAGE_URL SCREENSHOT_PNG
"""
import json
import shutil
import sys

from playwright.sync_api import sync_playwright

url, screenshot = sys.argv[1], sys.argv[2]
chromium = shutil.which("chromium") or shutil.which("chromium-browser")
if chromium is None:
    sys.exit("chromium is not installed: run `bash scripts/setup.sh --test`")

with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium,
        args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"],
    )
    page = browser.new_page()
    console = []
    page.on("console", lambda m: console.append(m.text))
    page.goto(url)
    page.wait_for_function("window.ttsStats && window.ttsStats.state === 'ready'", timeout=10_000)
    page.wait_for_selector("#speak:not([disabled])", timeout=10_000)
    voices = page.eval_on_selector_all("#voice option", "os => os.map(o => o.value)")
    page.fill("#text", "Hello from the browser. Every frame is checked as it arrives.")
    page.click("#speak")
    page.wait_for_function("window.ttsStats.state === 'done' || window.ttsStats.error", timeout=30_000)
    # Let the jitter buffer play out what is left.
    page.wait_for_function("window.ttsStats.bufferedMs < 1", timeout=15_000)
    page.wait_for_timeout(300)
    stats = page.evaluate("window.ttsStats")
    shown = {k: page.inner_text(f"#{k}") for k in ["frames", "crc", "seq", "ttfa", "underruns"]}
    page.screenshot(path=screenshot, full_page=True)
    browser.close()

print(json.dumps({"stats": stats, "shown": shown, "voices": voices, "console": console}))
