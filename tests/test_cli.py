import dataclasses
import importlib.util
import inspect
import re

import pytest

from cxrgan import cli
from cxrgan.cli import check_flags
from cxrgan.errors import UserError
from conftest import ROOT, run_tool


def _tool(src: str, out: str, size: int = 256, balance: bool = True, max_per_class: int = None):
    pass


@pytest.mark.parametrize("argv", [["--src", "a", "--out", "b"], ["a", "b"], ["a", "--out", "b", "--nobalance"],
                                  ["--src=a", "--out=b", "--max-per-class", "3", "--balance"], ["--help"]])
def test_accepted(argv):
    check_flags(_tool, argv)


@pytest.mark.parametrize("argv,msg", [(["--src", "a", "--out", "b", "--sise", "3"], "unknown option --sise"),
                                      (["--src", "a"], "missing --out"), ([], "missing --out")])
def test_refused(argv, msg):
    with pytest.raises(UserError, match=msg):
        check_flags(_tool, argv)


@pytest.mark.parametrize("tool", ["make_hdf5.py", "make_phantoms.py"])
def test_tools_answer_unknown_flags_with_one_line(tool, tmp_path):
    r = run_tool(tool, "--out", tmp_path / "x.h5", "--no-such-flag", "1")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["error: unknown option --no-such-flag; see --help "
                                                                   "for the options"]


# ---------------------------------------------------------------- every tool's options come from its config dataclass

def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOLS = sorted(p.stem for p in (ROOT / "tools").glob("*.py"))


@pytest.mark.parametrize("name", TOOLS)
def test_options_agree_with_the_config_dataclass(name):
    main = _load_tool(name).main
    config = main._config
    params = inspect.signature(main).parameters
    fields = dataclasses.fields(config)
    assert list(params) == [f.name for f in fields]
    for f in fields:
        default = params[f.name].default
        assert default == (f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty), f.name
    documented = re.findall(r"^        (\w+): ", main.__doc__.split("Args:", 1)[1], flags=re.M)
    assert documented == [f.name for f in fields], "the help's Args: must list every option, in order"


def test_command_passes_the_config_and_every_argument_as_called():
    @dataclasses.dataclass
    class Config:
        data: str
        epochs: int = 3
        rate: float | None = None

    seen = []
    cmd = cli.command(Config, lambda cfg, call_args: seen.append((cfg, call_args)))
    cmd("d.h5", rate=0.5)
    assert seen == [(Config("d.h5", 3, 0.5), {"data": "d.h5", "epochs": 3, "rate": 0.5})]
    with pytest.raises(UserError, match="see --help"):
        cmd(epochs=2)


def test_a_repeatable_option_given_twice_becomes_one_comma_separated_value():
    """python-fire keeps only the last of a repeated flag; a field marked repeatable keeps every value."""
    @dataclasses.dataclass
    class Config:
        data: str
        extra: str | None = dataclasses.field(default=None, metadata={cli.REPEATABLE: True})
        other: str | None = None

    cmd = cli.command(Config, lambda cfg, call_args: None)
    argv = ["--data", "d.h5", "--extra", "a.h5", "--other", "x", "--extra=b.h5:test"]
    assert cli.merge_repeated(cmd, argv) == ["--data", "d.h5", "--extra=a.h5,b.h5:test", "--other", "x"]
    assert cli.merge_repeated(cmd, ["--other", "x", "--other", "y"]) == ["--other", "x", "--other", "y"]
    assert cli.merge_repeated(cmd, ["--extra"]) == ["--extra"]  # no value: left for the usual error
    main = _load_tool("train_resnet").main
    assert cli.repeatable_options(main) == {"test_extra"}
    assert "Repeatable: --test-extra a.h5 --test-extra b.h5:test" in " ".join(main.__doc__.split())
