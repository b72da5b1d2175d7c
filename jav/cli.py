"""What jav's command lines share: `--config.KEY=VALUE` overrides and one-line errors.

`python -m jav.train` reads its overrides through ml_collections' config flags.
The tools that start from a trained run (`jav.sample`, `jav.evaluate`) take the
same spelling for the run's own config, so that what a run samples with is a
config key, changed for one call without retraining:

    python -m jav.evaluate --workdir RUN --num 64 --config.sample.steps=64 --config.sample.modality=3
    python -m jav.sample --workdir RUN --prompt "..." --out DIR --config.model.dtype=bfloat16 \
        --config.model.attention.kernel=cudnn

A value is read as the type the key already holds (bool, int, float, str, or a
tuple / list as a Python literal); a key the config does not have is an error
naming the nearest keys. `run_main` turns jav's errors (ValueError,
FileNotFoundError: each names the file or key and the fix) into one line on
stderr and exit status 1; JAV_TRACEBACK=1 shows the traceback instead.

Every tool (`jav.*`, `data_pipelines.*`, `benchmarks.*`) names the same thing the
same way (FLAGS below; tests/test_flags.py holds the tools to it): `--workdir` one
run directory (`--workdirs` several), `--out` what the tool writes, `--json` a file
its results are appended to, `--num` how many clips or prompts it makes or scores,
`--batch` clips per batch, `--seed` the seed of the first clip it makes or scores,
`--tasks` / `--modes` / `--seeds` comma-separated lists, `--steps` sampling (Euler)
steps, `--train-steps` training steps where a tool trains, `--sample-steps` where a
tool both trains and samples, `--repeats` timed repetitions. Multi-word flags are
spelt with dashes.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import pathlib
import sys
from typing import Callable

import ml_collections

PREFIX = "--config."
# flags whose meaning FLAGS fixes, and the spellings they replaced
FLAGS = (
    "--workdir",
    "--workdirs",
    "--out",
    "--json",
    "--num",
    "--batch",
    "--seed",
    "--tasks",
    "--modes",
    "--seeds",
    "--steps",
    "--train-steps",
    "--sample-steps",
    "--repeats",
)
RETIRED_FLAGS = {"--clips": "--num", "--test_clips": "--num", "--task": "--tasks", "--output": "--out", "--config_arg": "--config-arg"}


def split_overrides(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """argv -> ({KEY: VALUE} of its `--config.KEY=VALUE` / `--config.KEY VALUE` flags, the other arguments)."""
    overrides, rest, i = {}, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(PREFIX):
            key, eq, value = arg[len(PREFIX) :].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"{arg} has no value; write {arg}=VALUE")
                value, i = argv[i + 1], i + 1
            if not key:
                raise ValueError(f"{arg}: name a key, as in --config.sample.steps=64")
            overrides[key] = value
        else:
            rest.append(arg)
        i += 1
    return overrides, rest


def append_json(path, record: dict) -> None:
    """Appends `record` as one JSON line to `path` (a tool's `--json FILE`), making its folder."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def comma_list(text: str) -> tuple[str, ...]:
    """A comma-separated flag value (`--tasks t2va,v2a`) -> its items, blanks dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _keys(cfg, prefix="") -> list[str]:
    """Every leaf key of `cfg`, dotted."""
    out = []
    for k, v in cfg.items():
        if isinstance(v, (ml_collections.ConfigDict, dict)):
            out += _keys(v, prefix + k + ".")
        else:
            out.append(prefix + k)
    return out


def parse_value(text: str, like, flag: str):
    """`text` read as the type of `like` (the key's current value)."""
    if isinstance(like, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"{flag}={text!r}: write true or false")
    if isinstance(like, (int, float)):
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or (isinstance(like, int) and not isinstance(value, int)):
            raise ValueError(f"{flag}={text!r}: write a number ({type(like).__name__}), as in {flag}={like!r}")
        return type(like)(value)
    if isinstance(like, str):
        return text
    if isinstance(like, (tuple, list)) or like is None:
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            if like is None:
                return text
            raise ValueError(f"{flag}={text!r}: write a Python literal, as in {flag}='{tuple(like)!r}'") from None
        if like is not None and not isinstance(value, (tuple, list)):
            raise ValueError(f"{flag}={text!r}: write a tuple, as in {flag}='{tuple(like)!r}'")
        return type(like)(value) if like is not None else value
    raise ValueError(f"{flag}: the key holds a {type(like).__name__}, which the command line cannot set")


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: dict[str, str], *, what: str = "the config") -> ml_collections.ConfigDict:
    """A copy of `cfg` with each `KEY: VALUE` of `overrides` set, typed by the key's current value."""
    if not overrides:
        return cfg
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    for key, text in overrides.items():
        flag, node, parts = PREFIX + key, cfg, key.split(".")
        for n, part in enumerate(parts):
            if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
                near = difflib.get_close_matches(key, _keys(cfg), n=3, cutoff=0.6)
                raise ValueError(f"{flag}: {what} has no key {'.'.join(parts[: n + 1])!r}" + (f"; did you mean {', '.join(near)}?" if near else ""))
            if n < len(parts) - 1:
                node = node[part]
        like = node[parts[-1]]
        if isinstance(like, (ml_collections.ConfigDict, dict)):
            raise ValueError(f"{flag}: {key!r} is a group; set one of its keys ({', '.join(sorted(like))})")
        node[parts[-1]] = parse_value(text, like, flag)
    return cfg


def run_main(prog: str, main: Callable, argv: list[str] | None = None):
    """main(argv) with jav's errors (ValueError, FileNotFoundError) as one line naming `prog`."""
    try:
        return main(argv)
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("JAV_TRACEBACK"):
            raise
        sys.exit(f"{prog}: {type(e).__name__}: {e}")
