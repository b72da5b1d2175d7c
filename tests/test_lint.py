"""The lint settings of ruff.toml hold over the whole repository (unused names,
undefined names, shadowed imports, pycodestyle errors, lines over 160) and the code is as
`ruff format .` writes it."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ruff_check_passes():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_ruff_format_leaves_the_code_as_it_is():
    result = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, "run `ruff format .`:\n" + result.stdout[-5000:] + result.stderr[-2000:]


def test_ruff_finds_what_it_is_configured_to_find(tmp_path):
    """The settings are live: an unused import, an undefined name and unformatted code fail."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    return undefined_name\nx = [1,2 ,3]\n")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "ruff.toml"), str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 1 and "F401" in result.stdout and "F821" in result.stdout, result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "--config", str(ROOT / "ruff.toml"), str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 1 and "would be reformatted" in result.stdout, result.stdout
