"""The console in a real headless Chromium: the operator signs in through the form, the
page runs its own script under the strict CSP and refreshes by itself, and a hostile
payer string stays text."""

from __future__ import annotations

from typing import Any

import pytest

from a402.background import serve_in_thread
from tests.console.browser import chromium, sign_in, wait_for
from tests.console.support import HOSTILE, TOKEN, Records, console

PAYER = "0x" + "ab" * 20


ROWS_JS = """
return Array.from(document.querySelectorAll("#payments tr.payment")).map(
  (row) => Object.fromEntries(Array.from(row.cells).map((c) => [c.className, c.textContent])));
"""


def payment_rows(driver: Any) -> list[dict[str, str]]:
    """The payment rows as the page shows them, read in one script call (the page
    replaces its rows every two seconds, so element handles can go stale)."""
    rows: list[dict[str, str]] = driver.execute_script(ROWS_JS)
    return rows


def csp_violations(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]]


def test_a_hostile_payer_renders_as_text_and_new_payments_appear_without_reload() -> None:
    records = Records()
    records.add(HOSTILE, 7, "0xfeed")
    with serve_in_thread(console(records)) as url, chromium() as driver:
        from selenium.webdriver.common.by import By

        sign_in(driver, url, TOKEN)
        wait_for(driver, lambda d: payment_rows(d))
        assert payment_rows(driver)[0]["payer"] == HOSTILE
        assert driver.find_elements(By.CSS_SELECTOR, "#live img, #live script") == []
        assert driver.execute_script("return window.pwned === undefined") is True
        # The cookie is HttpOnly: the page's scripts cannot read it.
        assert driver.execute_script("return document.cookie") == ""
        driver.execute_script("document.body.dataset.marker = 'same page'")

        records.add(PAYER, 1500, "0x" + "cd" * 32)
        wait_for(driver, lambda d: any(r["payer"] == PAYER for r in payment_rows(d)))
        assert driver.execute_script("return document.body.dataset.marker") == "same page"
        assert driver.find_elements(By.CSS_SELECTOR, "svg.chart rect")  # the volume bars
        assert driver.execute_script("return window.pwned === undefined") is True
        assert csp_violations(driver) == []


def test_a_wrong_token_in_the_form_shows_no_payment() -> None:
    records = Records()
    records.add(PAYER, 1500, "0xabc")
    with serve_in_thread(console(records)) as url, chromium() as driver:
        from selenium.webdriver.common.by import By

        sign_in(driver, url, "not-the-operator-token-at-all")
        alert = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".error"))
        assert "not this service's operator token" in alert[0].text
        assert PAYER not in driver.page_source
        assert driver.get_cookies() == []


pytestmark = pytest.mark.browser
