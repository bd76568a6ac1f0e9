"""Maps the top-level folders onto the `loramgr.*` import names (see DESIGN.md section 1).

pyproject.toml holds the metadata; this file exists only because the package list is
derived from the folders, which a static table in pyproject.toml cannot do.
"""

from setuptools import find_packages, setup

PACKAGE_DIRS = {
    "loramgr": "loramgr",
    "loramgr.hub": "hub",
    "loramgr.composer": "composer",
    "loramgr.migrations": "migrations",
    "loramgr.examples": "examples",
}

packages = []
for package, folder in PACKAGE_DIRS.items():
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir=PACKAGE_DIRS,
    package_data={"": ["*.mako", "*.md", "*.json", "*.jsonl", "templates/*.html", "static/*.css"]},
)
