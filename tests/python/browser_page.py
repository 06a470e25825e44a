"""Opens the orchestrator's page in headless Chromium and uses it as a
listener would: speaks a sentence to the end (the current word
highlighted, the jitter buffer played out), stops a long one mid-way, and
speaks again on the same connection. Prints what the page's own
diagnostics counted at each step, as one JSON line.

Usage: browser_page.py PAGE_URL SCREENSHOT_PNG
"""
import json
import shutil
import sys

from playwright.sync_api import sync_playwright

SHORT = "Hello from the browser. Every frame is checked as it arrives."
LONG = (
    "This sentence is long enough to be stopped in the middle, while the "
    "listener is still hearing it, and nothing more of it should play once "
    "the stop button has been pressed by the person listening to it."
)

url, screenshot = sys.argv[1], sys.argv[2]
chromium = shutil.which("chromium") or shutil.which("chromium-browser")
if chromium is None:
    sys.exit("chromium is not installed: run `bash scripts/setup.sh --test`")


def stats(page):
    return page.evaluate("window.ttsStats")


def speak(page, text):
    page.fill("#text", text)
    page.click("#speak")


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=chromium,
        args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"],
    )
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.ttsStats && window.ttsStats.state === 'ready'", timeout=10_000)
    page.wait_for_selector("#speak:not([disabled])", timeout=10_000)
    voices = page.eval_on_selector_all("#voice option", "os => os.map(o => o.value)")

    # 1. A sentence to its end: `done` only once the buffer has played out.
    speak(page, SHORT)
    page.wait_for_function("window.ttsStats.state === 'done' || window.ttsStats.error", timeout=30_000)
    first = stats(page)
    first_shown = {k: page.inner_text(f"#{k}") for k in ["frames", "crc", "seq", "ttfa", "underruns", "buffered"]}
    first_classes = {k: page.get_attribute(f"#{k}", "class") for k in ["ttfa", "crc", "underruns", "gap"]}
    page.screenshot(path=screenshot, full_page=True)

    # 2. A long sentence, stopped once it has played for a while.
    speak(page, LONG)
    page.wait_for_function("window.ttsStats.utteranceMs > 600 || window.ttsStats.error", timeout=30_000)
    page.click("#stop")
    # The audio thread has dropped its buffer once it reports the reset.
    page.wait_for_function("window.ttsStats.utteranceMs === 0 && window.ttsStats.bufferedMs === 0", timeout=10_000)
    played_at_stop = stats(page)["playedMs"]
    page.wait_for_function("window.ttsStats.state === 'stopped' || window.ttsStats.error", timeout=10_000)
    page.wait_for_timeout(1500)
    stopped = stats(page)

    # 3. The same connection speaks again.
    speak(page, SHORT)
    page.wait_for_function("window.ttsStats.state === 'done' || window.ttsStats.error", timeout=30_000)
    last = stats(page)
    browser.close()

print(json.dumps({
    "first": first, "first_shown": first_shown, "first_classes": first_classes,
    "played_at_stop": played_at_stop, "stopped": stopped, "last": last,
    "voices": voices, "errors": errors,
}))
