"""Every command-line tool names its flags by one scheme (jav/cli.py): the flags of
each `add_argument` in jav/, data_pipelines/ and benchmarks/, read from the source."""

import ast
import pathlib

import pytest

from jav import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent


def tool_flags() -> dict[str, list[str]]:
    """module path -> the long flags its argparse parsers declare."""
    out = {}
    for path in sorted(p for d in ("jav", "data_pipelines", "benchmarks") for p in (ROOT / d).rglob("*.py")):
        flags = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                flags += [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
        if flags:
            out[str(path.relative_to(ROOT))] = flags
    return out


TOOLS = tool_flags()


def test_the_scan_finds_the_tools():
    for tool in ("jav/sample.py", "jav/evaluate.py", "jav/data/synthetic.py", "benchmarks/overfit.py", "benchmarks/joint_ablation.py"):
        assert tool in TOOLS, tool
    assert "--tasks" in TOOLS["jav/evaluate.py"] and "--train-steps" in TOOLS["benchmarks/overfit.py"]


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_flags_follow_the_scheme(tool):
    flags = TOOLS[tool]
    assert not [f for f in flags if "_" in f], f"{tool}: spell multi-word flags with dashes"
    retired = {f: cli.RETIRED_FLAGS[f] for f in flags if f in cli.RETIRED_FLAGS}
    assert not retired, f"{tool}: flags the scheme replaced (old -> new): {retired}"
    if "--train-steps" in flags or "--sample-steps" in flags:
        assert "--steps" not in flags, f"{tool} both trains and samples: --train-steps and --sample-steps, not --steps"
