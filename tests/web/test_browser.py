"""The web pages in a real browser (headless Chromium) against a real ``loramgr serve``: search,
open an adapter, follow the lineage both ways, download a file, and log in to a private hub.
Each page is saved as a screenshot (``$LORAMGR_SCREENSHOTS``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ..remote.helpers import LiveServer
from .conftest import create_token

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module")
def public_hub(web_hub):
    home, made = web_hub
    server = LiveServer(home).start()
    yield server, made
    server.stop()


@pytest.fixture(scope="module")
def private_hub(web_hub):
    home, made = web_hub
    secret, _ = create_token(home, "acme")
    server = LiveServer(home, args=("--private-read",)).start()
    yield server, made, secret
    server.stop()


def by_css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def result_names(driver) -> list[str]:
    return [a.text for a in by_css(driver, "#results a.adapter-link")]


def navigating(driver, action) -> None:
    """Run ``action`` (a click or a submit that loads a page) and wait until the new page replaced
    the old one: selenium returns from a click before the navigation it starts has happened."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element("tag name", "html")
    action()
    WebDriverWait(driver, 15).until(expected_conditions.staleness_of(old))


def shoot(driver, folder: Path, name: str) -> None:
    # The whole page, not only the window: resize to the document's height first.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height + 150, 600), 4000))  # + the window's own frame
    driver.save_screenshot(str(folder / f"{name}.png"))
    driver.set_window_size(1280, 1000)


def submit_search(driver, **fields) -> None:
    from selenium.webdriver.support.ui import Select

    form = by_css(driver, "form.search")[0]
    for name, value in fields.items():
        element = form.find_element("name", name)
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)
    navigating(driver, form.submit)


def test_home_searches_and_filters(browser, public_hub, screenshots):
    server, made = public_hub
    browser.get(server.url + "/")
    assert browser.title.startswith("Adapters")
    # Newest first: the last push leads.
    assert result_names(browser)[:2] == ["acme/mix-bare", "acme/mix"]
    assert set(result_names(browser)) == {"acme/mix-bare", "acme/mix", "lab/translate", "acme/summarize",
                                          "acme/sentiment"}
    shoot(browser, screenshots, "home")

    submit_search(browser, q="translate")
    assert result_names(browser) == ["lab/translate"]
    assert "q=translate" in browser.current_url
    shoot(browser, screenshots, "home-search")

    browser.get(server.url + "/")
    submit_search(browser, source="composed")
    assert result_names(browser) == ["acme/mix-bare", "acme/mix"]

    browser.get(server.url + "/")
    submit_search(browser, min_rank="10", base="synthetic/base-model")
    assert result_names(browser) == ["acme/mix", "acme/summarize"]

    browser.get(server.url + "/?q=no-such-adapter-anywhere")
    assert result_names(browser) == [] and by_css(browser, "#no-results")


def test_adapter_page_shows_versions_and_an_inert_card(browser, public_hub, screenshots):
    server, made = public_hub
    browser.get(server.url + "/")
    navigating(browser, next(a for a in by_css(browser, "#results a.adapter-link") if a.text == "acme/sentiment").click)
    assert browser.current_url == server.url + "/adapters/acme/sentiment"
    rows = by_css(browser, "#versions tbody tr")
    assert [r.find_element("css selector", "td a").text for r in rows] == ["@2", "@1"]
    assert "stable" in rows[0].text and "latest" in rows[0].text
    card = by_css(browser, "#card article")[0]
    # The hostile parts are there, as text; none of them ran or became an element.
    assert "<script>" in card.text and "onerror=" in card.text
    assert browser.execute_script("return window.__pwned === undefined")
    assert not card.find_elements("css selector", "script, img, iframe")
    assert not [a for a in card.find_elements("css selector", "a") if "javascript" in (a.get_attribute("href") or "")]
    assert card.find_elements("css selector", "table td")  # Markdown still renders: the table
    assert "loramgr pull acme/sentiment@2" in by_css(browser, "#use-loramgr")[0].text
    assert f'endpoint="{server.url}"' in by_css(browser, "#use-hf")[0].text
    assert 'PeftModel.from_pretrained(base, "acme/sentiment", revision="2")' in by_css(browser, "#use-peft")[0].text
    shoot(browser, screenshots, "adapter")

    navigating(browser, by_css(browser, "#versions tbody tr")[1].find_element("css selector", "td a").click)
    assert "version=1" in browser.current_url
    assert "first version" in by_css(browser, "#card article")[0].text


def test_lineage_links_both_ways(browser, public_hub, screenshots):
    server, made = public_hub
    browser.get(server.url + "/adapters/acme/mix")
    lineage = by_css(browser, "#lineage")[0]
    assert "delta" in lineage.text and "1.2345" in lineage.text and "e" * 64 in lineage.text
    assert len(lineage.find_elements("css selector", "svg.weights rect")) == 2
    assert len(lineage.find_elements("css selector", "svg.loss circle")) == 30 + 1  # evaluations + legend
    assert lineage.find_elements("css selector", "svg.loss path")
    shoot(browser, screenshots, "composed")

    navigating(browser, next(a for a in by_css(browser, "a.source-ref") if a.text == made["sentiment"]).click)
    assert browser.current_url == server.url + "/adapters/acme/sentiment?version=2"
    used = [a.text for a in by_css(browser, "#used-in a.used-in")]
    assert used == [made["bare"], made["mix"]]
    navigating(browser, next(a for a in by_css(browser, "#used-in a.used-in") if a.text == made["mix"]).click)
    assert browser.current_url == server.url + "/adapters/acme/mix?version=1"

    # The bars in the picture link too.
    navigating(browser, by_css(browser, "svg.weights a rect")[1].click)
    assert browser.current_url == server.url + "/adapters/acme/summarize?version=1"

    browser.get(server.url + "/adapters/acme/mix-bare")
    assert by_css(browser, "#no-history")
    shoot(browser, screenshots, "composed-no-history")


def wait_for_file(path: Path, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and not path.with_name(path.name + ".crdownload").exists():
            return path.read_bytes()
        time.sleep(0.05)
    raise AssertionError(f"{path.name} was not downloaded within {timeout} s")


def download(browser, downloads: Path, link_text: str) -> bytes:
    for old in downloads.iterdir():
        old.unlink()
    next(a for a in by_css(browser, "#files a.download") if a.text == link_text).click()
    return wait_for_file(downloads / link_text)


def test_a_file_downloads_with_its_bytes(browser, public_hub, downloads):
    server, made = public_hub
    browser.get(server.url + "/adapters/acme/summarize")
    folder = made["folders"][made["summarize"]]
    assert download(browser, downloads, "adapter_model.safetensors") == \
        (folder / "adapter_model.safetensors").read_bytes()


def test_a_private_hub_shows_nothing_without_a_token(browser, private_hub, screenshots, downloads):
    server, made, secret = private_hub
    browser.delete_all_cookies()
    browser.get(server.url + "/adapters/acme/sentiment")
    assert by_css(browser, ".login form") and "acme/sentiment" not in browser.find_element("css selector", "main").text
    assert "private" in by_css(browser, "#login-message")[0].text
    shoot(browser, screenshots, "login")
    browser.get(server.url + "/")
    assert by_css(browser, ".login form") and not by_css(browser, "#results")

    login = by_css(browser, ".login form")[0]
    login.find_element("name", "token").send_keys("lmt_not-a-real-token")
    navigating(browser, login.submit)
    assert "unknown" in by_css(browser, "#login-message")[0].text and not by_css(browser, "#results")

    browser.get(server.url + "/adapters/acme/sentiment")  # the login comes back here
    login = by_css(browser, ".login form")[0]
    login.find_element("name", "token").send_keys(secret)
    navigating(browser, login.submit)
    assert browser.current_url == server.url + "/adapters/acme/sentiment"
    assert by_css(browser, "#versions tbody tr")
    cookie = browser.get_cookie("loramgr_token")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert browser.execute_script("return document.cookie") == ""  # scripts cannot read it
    folder = made["folders"][made["sentiment"]]
    assert download(browser, downloads, "adapter_config.json") == (folder / "adapter_config.json").read_bytes()
    browser.get(server.url + "/")
    assert len(result_names(browser)) == 5
    shoot(browser, screenshots, "home-private-logged-in")

    navigating(browser, by_css(browser, "header form button")[0].click)  # log out
    assert browser.get_cookie("loramgr_token") is None
    browser.get(server.url + "/adapters/acme/mix")
    assert by_css(browser, ".login form") and not by_css(browser, "#lineage")
