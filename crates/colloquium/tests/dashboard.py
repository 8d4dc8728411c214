"""Drives colloquium's web dashboard in a real headless browser: Debian's chromium and
chromium-driver through selenium (both paths given; nothing is downloaded). Run by the
integration test `dashboard::the_dashboard_shows_what_the_api_says_and_replays_a_dead_letter`
(crates/colloquium/tests/it/dashboard.rs) and by `scripts/bench-dashboard.sh`.

    python dashboard.py check '<json>'    the test: see `check` below
    python dashboard.py measure '<json>'  page weight and time to first render, N fresh loads
    python dashboard.py watch '<json>'    keeps the page open until SIGTERM (benchmarks)

Prints one JSON object on stdout: what it saw and measured. A failed check raises (exit 1)
with a screenshot of the moment beside the others.
"""

import json
import statistics
import sys
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 60


def browser(args, width=1280, height=800):
    options = webdriver.ChromeOptions()
    options.binary_location = args["chromium"]
    # Headless in a container, and no calls home: the machine's network is closed.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='colloquium-chromium-')}",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=args["chromedriver"]), options=options)
    # The page's area, not the window's: a 1280×800 viewport whatever the window decorations.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    return driver


def wait(driver, what, check):
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.2).until(lambda d: check(d))
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what}")


def text(driver, css):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text.strip() if found else None


def log_in(driver, token):
    wait(driver, "the token form", lambda d: d.find_element(By.ID, "login").is_displayed())
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, "the dashboard", lambda d: d.find_element(By.ID, "main").is_displayed())


def check(args):
    """Logs in with a read-only token (replay refused for want of `admin`), then with an admin
    token: the numbers shown equal the API's (`expect`), window results and anomalies are
    listed, a dead letter replayed from the page leaves the list; screenshots at 1280×800 and
    at a phone's width, where nothing scrolls sideways."""
    shots, expect = args["shots"], args["expect"]
    driver = browser(args)
    seen = {}
    try:
        driver.get(args["url"])
        log_in(driver, args["read_token"])
        assert args["read_token"] not in driver.current_url, "the token is in the URL"

        # The numbers the API gave, on the page.
        for css, want in expect["texts"].items():
            wait(driver, f"{css} to read {want}", lambda d, css=css, want=want: text(d, css) == str(want))
            seen[css] = text(driver, css)
        wait(driver, "window results", lambda d: d.find_elements(By.CSS_SELECTOR, "#windows tr[data-window]"))
        wait(driver, "an anomaly with its reasons",
             lambda d: any("unusual" in r.text for r in d.find_elements(By.CSS_SELECTOR, "#anomalies tr[data-anomaly]")))
        wait(driver, "a level chart", lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-level canvas"))
        seen["window_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#windows tr[data-window]"))
        seen["anomaly_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#anomalies tr[data-anomaly]"))

        # Replay with a read-only token: refused, said so, the letter stays.
        row = f'#dlq tr[data-dead-letter="{args["replay"]}"]'
        wait(driver, "the dead letter to replay", lambda d: d.find_elements(By.CSS_SELECTOR, row))
        driver.find_element(By.CSS_SELECTOR, row + " button.replay").click()
        wait(driver, "the admin-scope message", lambda d: "admin scope" in d.find_element(By.ID, "dlq-message").text)
        assert driver.find_elements(By.CSS_SELECTOR, row), "a read token replayed a dead letter"

        # The admin token replays it: it leaves the list.
        driver.find_element(By.ID, "logout").click()
        log_in(driver, args["admin_token"])
        wait(driver, "the dead letter listed again", lambda d: d.find_elements(By.CSS_SELECTOR, row))
        driver.save_screenshot(f"{shots}/dashboard-desktop.png")
        driver.find_element(By.CSS_SELECTOR, row + " button.replay").click()
        wait(driver, "the replayed letter to leave the list", lambda d: not d.find_elements(By.CSS_SELECTOR, row))
        assert args["admin_token"] not in driver.current_url, "the token is in the URL"
        seen["session_token"] = driver.execute_script("return sessionStorage.length") == 1
        seen["local_storage"] = driver.execute_script("return localStorage.length")

        # A phone's width: one column, nothing wider than the screen.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(1.5)  # a poll or two, and the charts' resize
        seen["narrow_overflow"] = driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth")
        driver.save_screenshot(f"{shots}/dashboard-narrow.png")
        seen["errors"] = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"
                          and "401" not in e["message"] and "403" not in e["message"]]
        return seen
    except Exception:
        driver.save_screenshot(f"{shots}/dashboard-failure.png")
        raise
    finally:
        driver.quit()


def measure(args):
    """Loads the page `loads` times, each in a fresh browser (an empty cache): the bytes it
    transferred (the page and every asset) and the time from navigation to the first overview
    drawn (`window.colloquium.firstRender`)."""
    renders, weights, requests = [], [], []
    for _ in range(args["loads"]):
        driver = browser(args)
        try:
            driver.get(args["url"])
            first = wait(driver, "the first render", lambda d: d.execute_script("return window.colloquium.firstRender"))
            renders.append(first)
            entries = driver.execute_script(
                "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
                ".map(e => ({name: e.name, bytes: e.transferSize, body: e.decodedBodySize}))")
            # Only the page and its assets: the API calls made since are data, not weight.
            page = [e for e in entries if "/api/" not in e["name"]]
            weights.append(sum(e["bytes"] for e in page))
            requests.append(len(page))
        finally:
            driver.quit()
    return {
        "loads": len(renders),
        "first_render_ms_median": statistics.median(renders),
        "first_render_ms_max": max(renders),
        "page_bytes_transferred": statistics.median(weights),
        "page_requests": statistics.median(requests),
    }


def watch(args):
    """Keeps the dashboard open (polling the node as a user's would) until SIGTERM; then how
    many times it drew."""
    import signal
    driver = browser(args)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        driver.get(args["url"])
        wait(driver, "the first render", lambda d: d.execute_script("return window.colloquium.firstRender"))
        while not stop:
            time.sleep(0.2)
        return {"renders": driver.execute_script("return window.colloquium.renders")}
    finally:
        driver.quit()


if __name__ == "__main__":
    mode, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"check": check, "measure": measure, "watch": watch}[mode](args)))
