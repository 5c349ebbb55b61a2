import pytest

from cxrgan.cli import check_flags
from cxrgan.errors import UserError
from conftest import run_tool


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
