"""The verbs of issue 21 item 4 (erase, verify, reset, info), -v/-q, --json on flash/read/info,
and the help's examples narrowed to --via's personality (#22 item 3)."""

from __future__ import annotations

import subprocess
import sys

from bootkit.cli import main


def test_flash_help_with_via_shows_only_that_personalitys_examples(capsys):
    # #22 item 3: `flash --via dfu --help` gathers dfu's examples only (loading one personality)
    try:
        main(["flash", "--via", "dfu", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    examples = out.split("examples:", 1)[1]
    assert "--via dfu" in examples
    assert "--via hid" not in examples and "--via isp" not in examples


def test_flash_help_with_via_loads_no_other_personality():
    code = ("import sys; from bootkit.cli import main\n"
            "try:\n    main(['flash', '--via', 'dfu', '--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('bootkit.classes.') and m.endswith('.personality')),"
            " file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip() == "['bootkit.classes.dfu.personality']", out.stderr
