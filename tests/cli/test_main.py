"""The command-line package itself: every command answers --help and says what it does (its
one-line help and description come from its function's docstring), ``python -m sdeflow.cli``
runs, user errors are one line while bugs keep their traceback, and the command modules form
no import circle and import nothing private."""
import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

import sdeflow.cli
from sdeflow.cli import build_parser, main, one_line
from sdeflow.cli.common import add_command

PACKAGE = Path(sdeflow.cli.__file__).parent
SUBPARSERS = build_parser()._subparsers._group_actions[0]
COMMANDS = sorted(SUBPARSERS.choices)


def test_the_commands_are_all_there():
    assert COMMANDS == sorted(["train", "sample", "evaluate", "tune-steps", "choose-steps", "ems",
                               "train-classifier",
                               "train-autoencoder", "distill", "inpaint", "colorize", "sr", "demo", "likelihood",
                               "interpolate", "list", "serve"])


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: sdeflow {command}")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_help_line_and_a_description(command):
    """The one-line help under `sdeflow --help` and the description of `sdeflow COMMAND --help`
    are the first line and the rest of the command function's docstring."""
    help_ = next(a.help for a in SUBPARSERS._choices_actions if a.dest == command)
    description = SUBPARSERS.choices[command].description
    func = SUBPARSERS.choices[command].get_default("func")
    assert help_ and "\n" not in help_ and help_ == func.__doc__.strip().splitlines()[0]
    assert description and len(description.split()) >= 10  # a sentence or more, not a stub
    assert " ".join(description.split()) in " ".join(func.__doc__.split())


def test_a_command_without_a_docstring_is_refused_by_name():
    def cmd_nameless(a):
        return 0
    sub = build_parser()._subparsers._group_actions[0]
    with pytest.raises(ValueError, match="cmd_nameless needs a docstring"):
        add_command(sub, "nameless", cmd_nameless)


def test_python_dash_m_runs_the_cli():
    r = subprocess.run([sys.executable, "-m", "sdeflow.cli", "--version"], capture_output=True,
                       text=True, check=True)
    assert r.stdout.strip() == f"sdeflow {sdeflow.__version__}"


def test_a_user_error_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["likelihood", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sdeflow likelihood: error: ")
    assert one_line(ValueError("first\n\n  second ")) == "first; second"


def test_a_bug_keeps_its_traceback(monkeypatch):
    @functools.wraps(sdeflow.cli.info.cmd_list)  # its help and description
    def broken(a):
        raise RuntimeError("an internal bug")
    monkeypatch.setattr(sdeflow.cli.info, "cmd_list", broken)
    with pytest.raises(RuntimeError, match="internal bug"):
        main(["list"])


def _imports(module: Path):
    """(module name or None for sdeflow.cli itself, imported names) of every relative import."""
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            yield node.level, node.module, [a.name for a in node.names]


def test_command_modules_form_no_import_circle():
    """The package (``__init__``) imports every command module, so none may import it back;
    among themselves the modules' imports (at the top or inside functions) form no circle."""
    graph = {}
    for f in PACKAGE.glob("*.py"):
        deps = set()
        for level, mod, names in _imports(f):
            if level == 1:  # ``from .x import y``, or ``from . import x`` (a module or a name)
                deps |= {mod} if mod else {n if (PACKAGE / f"{n}.py").exists() else "__init__"
                                           for n in names}
        graph[f.stem] = deps
    assert [m for m, deps in graph.items() if "__init__" in deps] == ["__main__"]
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import circle: {' -> '.join(path + [m])}"
        if m not in done:
            path.append(m)
            for d in graph[m]:
                visit(d)
            path.pop()
            done.add(m)

    for m in graph:
        visit(m)


def test_no_private_names_are_imported_from_other_packages():
    private = [(f.name, mod, n) for f in PACKAGE.glob("*.py") for level, mod, names in _imports(f)
               if level > 1 for n in names if n.startswith("_") and not n.startswith("__")]
    assert not private
