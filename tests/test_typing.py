"""mypy passes on bootkit/ with the strictness named in pyproject.toml [tool.mypy] (#18 item 6).

The test runs `python -m mypy` exactly as a developer would, so the configuration it checks is the
one in pyproject (files, strictness, the few third-party modules exempted for lack of stubs).
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_is_clean_on_bootkit(request: pytest.FixtureRequest) -> None:
    if importlib.util.find_spec("mypy") is None:
        # mypy is in the test extra, so CI always has it: there a missing mypy is a failure.
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):  # as conftest reads it
            pytest.fail("mypy is not installed (pip install -e '.[test]' brings it)")
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    # The cache lives in pytest's own cache folder (already ignored by git) so that a second run
    # only rechecks the files that changed: about 10 s instead of a minute.
    # (no cache at all under -p no:cacheprovider)
    cache = request.config.cache.mkdir("mypy") if getattr(request.config, "cache", None) else None
    args = [sys.executable, "-m", "mypy", "--no-color-output"]
    if cache is not None:
        args += ["--cache-dir", str(cache)]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    if proc.returncode != 0 or errors:
        listing = "\n".join(errors) or (proc.stdout + proc.stderr).strip()
        pytest.fail(f"mypy found {len(errors)} error(s) in bootkit/ (exit {proc.returncode}):\n"
                    f"{listing}", pytrace=False)
    # pyproject's `files` was read and the package was checked, not an empty list of files.
    checked = re.search(r"no issues found in (\d+) source files", proc.stdout)
    assert checked and int(checked.group(1)) > 0, proc.stdout
