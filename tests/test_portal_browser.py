"""The portal in a real Chromium (Debian's chromium + chromium-driver, driven by Selenium):
a real web server thread, a real worker process and a real HTTP receiver on 127.0.0.1.

One browser session serves the whole module; its window is 360 CSS pixels wide, so every page
visited is also checked for sideways scrolling and for assets from another host.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from chatbot_webhooks import get_state
from flask import Flask
from standardwebhooks.webhooks import Webhook
from werkzeug.serving import BaseWSGIServer, make_server

from tests.conftest import FAST, Owner, Workers
from tests.receiver import Receiver
from tests.redis_server import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH = 360
#: Generous: the machine is shared; every wait is for a condition and ends when it holds.
WAIT = 40

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (scripts/test installs them)")

if CHROMIUM.exists() and CHROMEDRIVER.exists():
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import WebDriverWait


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="portal-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 f"--window-size={WIDTH},900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                              options=options)
    # headless windows are at least 500 px wide: emulate a 360-px-wide screen instead
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WIDTH, "height": 800, "deviceScaleFactor": 1,
                            "mobile": False})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass
class Site:
    """The app served over real HTTP, with an owner and a worker."""

    app: Flask
    base: str
    owner: Owner
    server: BaseWSGIServer

    def link(self, **kw: Any) -> str:
        return get_state(self.app).portal_link(self.owner.name, **kw)


@pytest.fixture
def site(make_app: Callable[..., Flask], workers: Workers) -> Iterator[Site]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = make_app(**FAST, WEBHOOKS_PUBLIC_URL=base)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(app, base, Owner(app, "olga"), server)
    finally:
        server.shutdown()
        thread.join(10)


def check_page(driver: WebDriver, base: str) -> None:
    """Every asset and link on the page is same-origin, and nothing scrolls sideways."""
    origin = urlsplit(base)[:2]
    urls = driver.execute_script(
        "return Array.from(document.querySelectorAll('[src],[href],form[action]'))"
        ".map(e => e.src || e.href || e.action);")
    assert urls, "a portal page links to nothing"
    for url in urls:
        assert urlsplit(url)[:2] == origin, f"{url} is not from {base}"
    assert driver.execute_script("return window.innerWidth") == WIDTH
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= WIDTH, f"{driver.current_url} scrolls sideways ({scroll}px)"


def wait_for(driver: WebDriver) -> WebDriverWait[WebDriver]:
    """Waits that read pages being replaced: a vanished or not-yet-there element is a "not
    yet", never a failure."""
    return WebDriverWait(driver, WAIT,
                         ignored_exceptions=(StaleElementReferenceException,
                                             NoSuchElementException))


def button(driver: WebDriver, text: str) -> WebElement:
    """The button or link reading ``text``, once the page shows it."""
    xpath = f"//button[normalize-space()='{text}'] | //a[normalize-space()='{text}']"
    return wait_for(driver).until(lambda d: d.find_element(By.XPATH, xpath))


def field(driver: WebDriver, label: str, nth: int = 0) -> WebElement:
    """The input labelled ``label`` (the ``nth`` of several with that label)."""
    labels = driver.find_elements(By.XPATH, f"//label[normalize-space()='{label}']")
    return driver.find_element(By.ID, labels[nth].get_attribute("for") or "")


def heading(driver: WebDriver) -> str:
    return str(driver.execute_script(
        "const h = document.querySelector('h1'); return h ? h.textContent.trim() : '';"))


def test_owner_adds_tests_redelivers_rotates_and_deletes_a_webhook(
    browser: WebDriver, site: Site, receiver: Receiver, workers: Workers,
) -> None:
    workers.start()
    wait = wait_for(browser)
    bot_id = site.owner.bots["quote"]

    browser.get(site.link())
    wait.until(lambda d: heading(d) == "Bots")
    check_page(browser, site.base)
    # the FAQ bot is listed with the reason, not as a link
    assert "Webhooks are available only" in browser.page_source
    assert not browser.find_elements(By.LINK_TEXT, "olga faq bot")
    button(browser, "olga quote bot").click()
    wait.until(lambda d: heading(d) == "olga quote bot")
    check_page(browser, site.base)

    button(browser, "Add webhook").click()
    wait.until(lambda d: heading(d) == "Add webhook")
    check_page(browser, site.base)
    assert field(browser, "quote.created").is_selected()  # every event checked by default
    field(browser, "Name").send_keys("crm")
    field(browser, "URL").send_keys(receiver.url("/hook"))
    field(browser, "Parameter name").send_keys("note")
    field(browser, "Parameter value").send_keys("<script>alert(1)</script>")
    button(browser, "Add webhook").click()
    wait.until(lambda d: heading(d).startswith("crm"))
    check_page(browser, site.base)
    secret = browser.find_element(By.ID, "secret-value").text
    assert secret.startswith("whsec_")
    # the form redirected (303) to the webhook's page: a refresh posts nothing again and the
    # secret, shown once, is gone
    assert "/webhooks/new" not in browser.current_url and secret not in browser.current_url
    browser.refresh()
    wait.until(lambda d: heading(d).startswith("crm"))
    assert not browser.find_elements(By.ID, "secret-value")
    assert len(get_state(site.app).store.webhooks_of(bot_id)) == 1
    # the custom parameter is shown as text, never run as markup
    assert field(browser, "Parameter value").get_attribute("value") == \
        "<script>alert(1)</script>"
    assert not browser.find_elements(By.XPATH, "//script")

    button(browser, "Send test event").click()
    wait.until(lambda d: "notice=test-sent" in d.current_url)

    def logged_succeeded(driver: WebDriver) -> bool:
        driver.refresh()
        cells = driver.find_elements(By.CSS_SELECTOR, "table.log td[data-label='Status']")
        return bool(cells) and cells[0].text == "succeeded"

    wait.until(logged_succeeded)
    check_page(browser, site.base)
    sent = receiver.wait_for(1, "/hook")[0]
    Webhook(secret).verify(sent.body, sent.headers)

    button(browser, "webhook.test").click()
    wait.until(lambda d: "/deliveries/dlv_" in d.current_url)
    check_page(browser, site.base)
    shown = browser.find_element(By.ID, "payload").text
    assert json.loads(shown) == sent.json()
    assert sent.json()["note"] == "<script>alert(1)</script>"
    assert "HTTP 200" in browser.page_source
    assert secret not in browser.page_source  # headers may show, secrets never

    button(browser, "Redeliver").click()
    again = receiver.wait_for(2, "/hook")[1]
    assert again.headers["webhook-id"] == sent.headers["webhook-id"]
    wait.until(lambda d: "Sent again" in d.page_source)

    button(browser, "Reveal secret").click()
    wait.until(lambda d: d.find_elements(By.ID, "secret-value"))
    assert browser.find_element(By.ID, "secret-value").text == secret
    assert secret not in browser.current_url  # revealed by a POST, never in a URL
    button(browser, "Rotate secret").click()
    wait.until(lambda d: "New secret made" in d.page_source)
    rotated = browser.find_element(By.ID, "secret-value").text
    assert rotated.startswith("whsec_") and rotated != secret
    assert "also signs every delivery until" in browser.page_source
    assert " UTC" in browser.find_element(By.CLASS_NAME, "secret-panel").text

    button(browser, "Delete").click()
    wait.until(lambda d: heading(d).startswith("Delete the webhook"))
    check_page(browser, site.base)
    button(browser, "Delete").click()
    wait.until(lambda d: heading(d) == "olga quote bot")
    assert "No webhooks yet." in browser.page_source
    assert get_state(site.app).store.webhooks_of(bot_id) == []

    button(browser, "Sign out").click()
    wait.until(lambda d: heading(d) == "Signed out")
    check_page(browser, site.base)
    browser.back()
    browser.refresh()
    wait.until(lambda d: heading(d) == "Not signed in")


def test_used_and_altered_links_are_refused_with_a_reason(
    browser: WebDriver, site: Site,
) -> None:
    link = site.link()
    altered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    browser.delete_all_cookies()
    browser.get(altered)
    assert heading(browser) == "Link not valid"
    assert "was changed" in browser.page_source
    check_page(browser, site.base)
    browser.get(link)
    assert heading(browser) == "Bots"
    browser.delete_all_cookies()
    browser.get(link)
    assert heading(browser) == "Link not valid"
    assert "was used already" in browser.page_source
    browser.get(site.base + "/portal/")
    assert heading(browser) == "Not signed in"
