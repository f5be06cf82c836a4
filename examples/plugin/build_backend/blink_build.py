"""A PEP 517 build backend of about a hundred lines, so this example installs with no network.

Why not setuptools: before release 70.1 setuptools builds wheels only with the
``wheel`` package installed, which a fresh venv lacks; with build isolation pip
would fetch both from an index, and bootkit's test installs this plug-in with no
network (``pip install --no-build-isolation``).  A plug-in of your own should
use a normal backend (``setuptools``, ``hatchling``, ``flit_core``): the
``[project]`` table and the entry point in pyproject.toml are all that matter,
and they are standard (PEP 621; entry points: the PyPA entry points
specification).  What this writes is the wheel format of PEP 427 (dist-info
with METADATA, WHEEL, entry_points.txt, RECORD) and, for ``pip install -e``,
PEP 660's editable wheel (a .pth file naming this directory).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG = "py3-none-any"


def _project() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - get_requires_for_build_* asks for tomli there
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _names(project: dict) -> tuple[str, str, str]:
    meta = project["project"]
    dist = meta["name"].replace("-", "_")
    return dist, meta["version"], f"{dist}-{meta['version']}"


def _metadata(project: dict) -> str:
    meta = project["project"]
    lines = ["Metadata-Version: 2.1", f"Name: {meta['name']}", f"Version: {meta['version']}",
             f"Summary: {meta.get('description', '')}"]
    if "requires-python" in meta:
        lines.append(f"Requires-Python: {meta['requires-python']}")
    lines += [f"Requires-Dist: {req}" for req in meta.get("dependencies", [])]
    if "license" in meta:
        lines.append(f"License: {meta['license'].get('text', '')}")
    readme = meta.get("readme")
    body = ""
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        body = "\n" + (ROOT / readme).read_text(encoding="utf-8")
    return "\n".join(lines) + "\n" + body


def _entry_points(project: dict) -> str:
    out = []
    for group, entries in project["project"].get("entry-points", {}).items():
        out.append(f"[{group}]")
        out += [f"{name} = {value}" for name, value in entries.items()]
        out.append("")
    return "\n".join(out)


def _dist_info(project: dict) -> dict[str, bytes]:
    _, _, stem = _names(project)
    info = f"{stem}.dist-info"
    return {
        f"{info}/METADATA": _metadata(project).encode(),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: blink_build\nRoot-Is-Purelib: true\nTag: {TAG}\n".encode(),
        f"{info}/entry_points.txt": _entry_points(project).encode(),
    }


def _packages(project: dict) -> list[str]:
    return project.get("tool", {}).get("blink_build", {}).get("packages", [])


def _write_wheel(directory: str, files: dict[str, bytes]) -> str:
    project = _project()
    _, _, stem = _names(project)
    record_name = f"{stem}.dist-info/RECORD"
    record = []
    name = f"{stem}-{TAG}.whl"
    with zipfile.ZipFile(os.path.join(directory, name), "w", zipfile.ZIP_DEFLATED) as whl:
        for path, data in files.items():
            whl.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{record_name},,")
        whl.writestr(record_name, "\n".join(record) + "\n")
    return name


# -- the PEP 517 / PEP 660 hooks


def get_requires_for_build_wheel(config_settings=None) -> list[str]:
    return [] if sys.version_info >= (3, 11) else ["tomli"]


get_requires_for_build_sdist = get_requires_for_build_editable = get_requires_for_build_wheel


def prepare_metadata_for_build_wheel(metadata_directory: str, config_settings=None) -> str:
    files = _dist_info(_project())
    for path, data in files.items():
        target = Path(metadata_directory) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return next(iter(files)).split("/")[0]


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory: str, config_settings=None, metadata_directory=None) -> str:
    project = _project()
    files = {}
    for package in _packages(project):
        for path in sorted((ROOT / package).rglob("*.py")):
            files[path.relative_to(ROOT).as_posix()] = path.read_bytes()
    files.update(_dist_info(project))
    return _write_wheel(wheel_directory, files)


def build_editable(wheel_directory: str, config_settings=None, metadata_directory=None) -> str:
    project = _project()
    dist, _, _ = _names(project)
    return _write_wheel(wheel_directory, {f"__editable__.{dist}.pth": f"{ROOT}\n".encode(),
                                          **_dist_info(project)})


def build_sdist(sdist_directory: str, config_settings=None) -> str:
    _, _, stem = _names(_project())
    name = f"{stem}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tar:
        for path in sorted(ROOT.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
                tar.add(path, f"{stem}/{path.relative_to(ROOT).as_posix()}")
        pkg_info = _metadata(_project()).encode()
        entry = tarfile.TarInfo(f"{stem}/PKG-INFO")
        entry.size = len(pkg_info)
        tar.addfile(entry, io.BytesIO(pkg_info))
    return name
