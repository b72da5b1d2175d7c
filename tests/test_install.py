"""The install files agree: setup.py's ranges and extras against the exact pins,
and the Dockerfile (no container engine runs in CI: its instructions are parsed
and every file it copies and every ACCEL it accepts is checked)."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCKER_INSTRUCTIONS = {"FROM", "ARG", "RUN", "COPY", "WORKDIR", "ENV", "CMD", "ENTRYPOINT", "LABEL", "USER"}


def requirements(tmp_path):
    """setup.py's requires.txt, written by `setup.py egg_info` into tmp_path."""
    subprocess.run(
        [sys.executable, str(ROOT / "setup.py"), "-q", "egg_info", "--egg-base", str(tmp_path)], cwd=ROOT, check=True, timeout=120, capture_output=True
    )
    text = (tmp_path / "jav.egg-info" / "requires.txt").read_text()
    sections, name = {}, ""
    for line in text.splitlines():
        if line.startswith("["):
            name = line.strip("[]")
        elif line:
            sections.setdefault(name, []).append(line)
    return sections


def pins(name):
    return dict(line.split("#")[0].strip().split("==") for line in (ROOT / name).read_text().splitlines() if line.split("#")[0].strip())


def test_install_requires_are_ranges_around_the_pins(tmp_path):
    sections = requirements(tmp_path)
    exact = {p: v for p, v in pins("requirements.txt").items() if p not in ("pytest", "pytest-xdist", "ruff")}
    runtime = dict(re.match(r"([A-Za-z0-9_.\-]+(?:\[[a-z0-9,-]+\])?)(.*)", r).groups() for r in sections[""])  # a name keeps its extras
    assert set(runtime) == set(exact)
    for package, spec in runtime.items():
        if package in ("jax", "jaxlib"):
            assert spec == f"=={exact[package]}"  # they move with their accelerator plugins
        else:
            assert spec.startswith("~=") and exact[package].startswith(spec[2:]), (package, spec)
    assert sections["cuda12"] == [f"jax[cuda12]=={exact['jax']}"]
    assert sections["tpu"] == [f"libtpu=={pins('requirements-tpu.txt')['libtpu']}"]
    # the CUDA pins are the plugin of the pinned jax
    assert pins("requirements-cuda12.txt")["jax-cuda12-plugin"] == exact["jax"]


def test_dockerfile_parses_and_copies_what_exists():
    lines, current = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    assert not current, "a continued line runs off the end of the Dockerfile"
    instructions = [line.split()[0] for line in lines]
    assert set(instructions) <= DOCKER_INSTRUCTIONS, set(instructions) - DOCKER_INSTRUCTIONS
    assert instructions.index("ARG") < instructions.index("FROM")  # the Python version is a build arg
    for line in lines:
        if line.startswith("COPY ") and not line.startswith("COPY . "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    accepted = re.search(r'case "\$ACCEL" in ([^)]*)\)', "\n".join(lines)).group(1).split("|")
    for accel in accepted:
        assert accel == "cpu" or (ROOT / f"requirements-{accel}.txt").exists(), accel
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv/", "runs/", ".git/"} <= set(ignored)
