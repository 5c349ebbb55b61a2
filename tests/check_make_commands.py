#!/usr/bin/env python3
"""Check the tool commands a `make -n` prints: each names a tool of tools/, every option is one of that tool's
options, and every option that takes a value has one of the right type (so an empty make variable, as in
``--epochs  --seeds 3``, is caught before anything runs).

    make -n all DATA=nih > dry-run.txt && python tests/check_make_commands.py dry-run.txt
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shlex
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


def tool_options(tool: str) -> dict[str, type]:
    """A tool's options and their types, from the dataclass its command is built from (cxrgan.cli.command)."""
    spec = importlib.util.spec_from_file_location(f"_tool_{Path(tool).stem}", ROOT / "tools" / tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.main._config
    hints = typing.get_type_hints(config)
    return {f.name: _plain_type(hints[f.name]) for f in dataclasses.fields(config)}


def _plain_type(t) -> type:
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return _plain_type(args[0]) if args else t


def commands(text: str) -> list[list[str]]:
    """The tool invocations in make's output (backslash-continued lines joined), as argument lists from the tool."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line) if "tools/" in line else []
        start = next((i for i, w in enumerate(words) if w.startswith("tools/") and w.endswith(".py")), None)
        if start is not None:
            out.append(words[start:])
    return out


def problems(command: list[str], options: dict[str, type]) -> list[str]:
    tool, args, found = command[0], command[1:], []
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("--"):
            found.append(f"{tool}: stray value {word!r}")
            i += 1
            continue
        name = word[2:].replace("-", "_")
        if name.startswith("no") and options.get(name[2:]) is bool:
            i += 1
            continue
        if name not in options:
            found.append(f"{tool}: unknown option {word}")
            i += 1 if i + 1 == len(args) or args[i + 1].startswith("--") else 2  # and its value, if it has one
            continue
        if options[name] is bool:
            i += 1
            continue
        value = args[i + 1] if i + 1 < len(args) else None
        if value is None or value.startswith("--"):
            found.append(f"{tool}: {word} has no value (an empty make variable?)")
            i += 1
            continue
        if options[name] in (int, float):
            try:
                options[name](value)
            except ValueError:
                found.append(f"{tool}: {word} {value!r} is not a {options[name].__name__}")
        i += 2
    return found


def check(text: str) -> tuple[int, list[str]]:
    """(how many tool commands, what is wrong with them)."""
    cmds, cache, found = commands(text), {}, []
    for cmd in cmds:
        if cmd[0] not in cache:
            cache[cmd[0]] = tool_options(Path(cmd[0]).name)
        found += problems(cmd, cache[cmd[0]])
    return len(cmds), found


def main(path: str) -> None:
    n, found = check(Path(path).read_text())
    for p in found:
        print(f"make -n: {p}", file=sys.stderr)
    if found or n == 0:
        sys.exit(f"error: {len(found)} malformed command(s) of {n} in {path}" if found else f"error: no tool commands "
                 f"in {path}")
    print(f"make -n: {n} tool commands, all well-formed")


if __name__ == "__main__":
    main(*sys.argv[1:])
