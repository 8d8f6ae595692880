"""``sdeflow serve``'s command line: user errors are one line before any server starts."""
from sdeflow.cli import main
from sdeflow.serve import default_runs
from sdeflow.serve.runs import find_runs


def test_a_missing_run_folder_is_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdeflow serve: error: no such run folder") and err.count("\n") == 1


def test_a_folder_without_runs_is_refused(tmp_path, capsys):
    assert main(["serve", str(tmp_path)]) == 2
    assert "no runs in" in capsys.readouterr().err


def test_runs_are_found_in_a_folder_of_runs(run_dirs):
    assert {p.name for p in find_runs([run_dirs])} == {"digits", "toy", "noguide"}
    assert all(p.startswith("runs/") for p in default_runs())
