#!/usr/bin/env python3
"""The gateway's web page in a real browser (headless Chromium via
Selenium), driven by tests/gateway_web.rs.

    web_selenium.py URL DOWNLOAD_DIR FOLDER FILE1 FILE2

URL is the `web:` line's (token included). The script opens it, checks
that neither the token nor the CSRF token (`#k=`) stays in the address
bar, that the node status shows four nodes up, that a new tab (no CSRF
token in its sessionStorage) says to open the URL again and lists
nothing, goes into FOLDER (which must
exist), uploads FILE1 and FILE2 through the page's file input, waits
until both are listed, downloads FILE1 by clicking its link and compares
its bytes, deletes FILE2 (accepting the confirmation) and waits until it
is gone.

Between steps it prints `CHECK <step>` and waits for a line on standard
input: the Rust side checks `vault-client list` meanwhile and answers
`ok` (anything else stops the script). It exits 0 when all went well,
else non-zero with the reason on standard error. Every wait is bounded.
"""

import os
import sys
import time

WAIT = 60  # seconds, for any one thing to appear


def fail(msg):
    print(f"web_selenium.py: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as e:
    fail(f"selenium is missing ({e}): run `.ci/install-gateway-deps`")


def checkpoint(step):
    print(f"CHECK {step}", flush=True)
    answer = sys.stdin.readline().strip()
    if answer != "ok":
        fail(f"the test stopped after step {step!r}: {answer!r}")


def browser(download_dir):
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    opts.add_experimental_option("prefs", {
        "download.default_directory": download_dir,
        "download.prompt_for_download": False,
        "download.directory_upgrade": True,
        "safebrowsing.enabled": False,
    })
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=opts)
    # Headless downloads: allowed into download_dir.
    driver.execute_cdp_cmd("Page.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": download_dir})
    return driver


def listed(driver):
    """The names the file table shows."""
    # Read in one script: the table is rebuilt while the test looks.
    return set(driver.execute_script(
        "return Array.from(document.querySelectorAll('#entries a.file'))"
        ".map(a => a.textContent)"))


def wait_for(driver, what, cond):
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.2,
                             ignored_exceptions=(StaleElementReferenceException,)).until(cond)
    except TimeoutException:
        err = driver.find_elements(By.ID, "error")
        shown = err[0].text if err else ""
        uploads = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#uploads li")]
        fail(f"timed out after {WAIT}s waiting for {what}; page error: {shown!r}; "
             f"uploads: {uploads}; files listed: {sorted(listed(driver))}")


def main():
    if len(sys.argv) != 6:
        fail("usage: web_selenium.py URL DOWNLOAD_DIR FOLDER FILE1 FILE2")
    url, download_dir, folder, file1, file2 = sys.argv[1:]
    name1, name2 = os.path.basename(file1), os.path.basename(file2)
    try:
        driver = browser(download_dir)
    except Exception as e:  # noqa: BLE001: any start failure is reported
        fail(f"cannot start headless Chromium ({e}): run `.ci/install-gateway-deps`")
    try:
        driver.set_page_load_timeout(WAIT)
        driver.get(url)
        # The token went into a cookie and out of the address bar.
        if "token=" in driver.current_url:
            fail(f"the token is still in the address bar: {driver.current_url}")
        # The CSRF token went from the fragment into sessionStorage.
        wait_for(driver, "the #k= fragment removed from the address bar",
                 lambda d: "k=" not in d.current_url)
        if not driver.execute_script("return sessionStorage.getItem('vault-csrf')"):
            fail("no CSRF token in sessionStorage")

        # Node status: four nodes, all up.
        def four_up(d):
            classes = d.execute_script(
                "return Array.from(document.querySelectorAll('#status li'))"
                ".map(li => li.className)")
            return len(classes) == 4 and all(c.split() == ["up"] for c in classes)
        wait_for(driver, "four nodes shown up", four_up)
        print("status: " + ", ".join(driver.execute_script(
            "return Array.from(document.querySelectorAll('#status li'))"
            ".map(li => li.textContent)")), flush=True)

        # A new tab has the cookie but not the CSRF token: it says to open
        # the web: line's URL again, and shows nothing of the vault.
        first = driver.current_window_handle
        page = driver.current_url
        driver.switch_to.new_window("tab")
        driver.get(page)
        wait_for(driver, "the new tab's no-session message",
                 EC.visibility_of_element_located((By.ID, "no-session")))
        said = driver.find_element(By.ID, "no-session").text
        if "web:" not in said or "again" not in said:
            fail(f"the new tab's message does not say what to do: {said!r}")
        if listed(driver) or driver.find_elements(By.CSS_SELECTOR, "#entries tr"):
            fail("the new tab lists files without the CSRF token")
        driver.close()
        driver.switch_to.window(first)

        # Into the folder, by its link.
        wait_for(driver, f"the folder {folder!r} listed",
                 EC.element_to_be_clickable((By.LINK_TEXT, folder)))
        driver.find_element(By.LINK_TEXT, folder).click()
        wait_for(driver, f"the crumbs to show {folder!r}",
                 lambda d: folder in d.find_element(By.ID, "crumbs").text)

        # Upload both through the file input.
        driver.find_element(By.ID, "files").send_keys(file1 + "\n" + file2)
        wait_for(driver, f"{name1} and {name2} listed",
                 lambda d: {name1, name2} <= listed(d))
        done = driver.find_elements(By.CSS_SELECTOR, "#uploads li.done")
        if len(done) != 2:
            fail(f"expected two finished uploads, the page shows "
                 f"{[li.text for li in driver.find_elements(By.CSS_SELECTOR, '#uploads li')]}")
        checkpoint("uploaded")

        # Download the first by clicking its link.
        driver.find_element(By.LINK_TEXT, name1).click()
        target = os.path.join(download_dir, name1)

        def downloaded(_):
            names = os.listdir(download_dir)
            return name1 in names and not any(n.endswith(".crdownload") for n in names)
        wait_for(driver, f"{name1} in the download folder ({download_dir})", downloaded)
        with open(target, "rb") as f:
            got = f.read()
        with open(file1, "rb") as f:
            want = f.read()
        if got != want:
            fail(f"downloaded {name1}: {len(got)} bytes, not the {len(want)} uploaded")
        print(f"downloaded {name1}: {len(got)} bytes, same as uploaded", flush=True)

        # Delete the second, confirming.
        button = driver.find_element(
            By.CSS_SELECTOR, f'#entries button.delete[data-name="{folder}/{name2}"]')
        button.click()
        alert = wait_for(driver, "the delete confirmation", EC.alert_is_present())
        if name2 not in alert.text:
            fail(f"the confirmation does not name the file: {alert.text!r}")
        alert.accept()
        wait_for(driver, f"{name2} gone from the list",
                 lambda d: name2 not in listed(d) and name1 in listed(d))
        checkpoint("deleted")
    finally:
        driver.quit()
    print("OK", flush=True)


if __name__ == "__main__":
    main()
