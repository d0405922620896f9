"""The command line starts fast: its help loads no subcommand's heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "pandas", "matplotlib", "scipy", "nibabel", "monai")


@pytest.mark.parametrize("argv", [["--help"], ["simulate", "--help"], ["predict", "--help"]])
def test_help_imports_no_heavy_library(argv):
    code = (
        "import sys, json, contextlib, io\n"
        "from deepmir.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if '.' not in m)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
