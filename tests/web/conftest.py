"""Fixtures for the web pages: a populated hub home, and a headless Chromium driven by selenium.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them)
and the ``selenium`` package (the ``dev`` extra); without them they skip, saying which is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from loramgr.hub.db.engine import Database
from loramgr.hub.tokens import TokenStore

from .hub_content import populate

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)


def find_program(names, extra_dirs=("/usr/lib/chromium", "/usr/bin")) -> str | None:
    for name in names:
        found = shutil.which(name) or next((str(Path(d) / name) for d in extra_dirs if (Path(d) / name).is_file()),
                                           None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def web_hub(tmp_path_factory):
    """``(home, made)``: a hub home with the adapters of ``hub_content.populate``."""
    root = tmp_path_factory.mktemp("web-hub")
    made = populate(root / "home", root / "scratch")
    return root / "home", made


def create_token(home: Path, namespace: str = "acme", *, write: bool = False) -> tuple[str, int]:
    database = Database(f"sqlite:///{home / 'registry.db'}")
    database.ensure_current()
    try:
        created = TokenStore(database).create(namespace, write=write)
        return created.secret, created.token.id
    finally:
        database.dispose()


def revoke_token(home: Path, token_id: int) -> None:
    database = Database(f"sqlite:///{home / 'registry.db'}")
    try:
        TokenStore(database).revoke(token_id)
    finally:
        database.dispose()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where the pages' screenshots go: ``$LORAMGR_SCREENSHOTS`` if set, else a temp folder."""
    folder = Path(os.environ["LORAMGR_SCREENSHOTS"]) if os.environ.get("LORAMGR_SCREENSHOTS") else \
        tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    """One headless Chromium for the module (starting one takes a second or two)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    binary, driver_path = find_program(BROWSERS), find_program(DRIVERS)
    if binary is None or driver_path is None:
        pytest.skip("the browser tests need chromium and chromedriver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--disable-extensions", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False,
                                              "safebrowsing.enabled": False})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()
