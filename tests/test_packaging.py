"""The wheel installs hub/, composer/ and migrations/ under loramgr.*, never as top-level names."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_folders_onto_loramgr_packages(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("loramgr-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("loramgr/cli/__init__.py", "loramgr/hub/registry.py", "loramgr/hub/db/models.py",
                     "loramgr/composer/compose.py", "loramgr/composer/methods/delta.py",
                     "loramgr/migrations/env.py", "loramgr/migrations/script.py.mako",
                     "loramgr/migrations/versions/0001_initial_schema.py", "loramgr/examples/lab/__init__.py"):
        assert expected in names
    top_level = {name.split("/")[0] for name in names if not name.startswith("loramgr-")}
    assert top_level == {"loramgr"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "loramgr = loramgr.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_import_loramgr_is_light():
    code = "import sys, loramgr; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
