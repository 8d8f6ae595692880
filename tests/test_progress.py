"""Progress bars: tqdm on a terminal, a few whole lines in a log file."""
import io
import subprocess
import sys

from tqdm.auto import tqdm

from sdeflow import progress
from sdeflow.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_a_3000_step_run_writes_a_few_lines_to_a_log_file(tmp_path):
    """stderr redirected to a file, as `sdeflow train ... 2> log`: no carriage returns, at most
    a few dozen lines (tqdm alone writes one redraw per update), the last one the final count."""
    script = ("from sdeflow.progress import progress_bar\n"
              "bar = progress_bar(total=3000, desc='training', unit='step')\n"
              "for i in range(3000):\n"
              "    bar.update(1)\n"
              "    bar.set_postfix(loss=1 / (i + 1))\n"
              "bar.close()\n")
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", script], stderr=f, check=True)
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    assert 2 <= len(_lines(text)) <= 36
    assert "3000/3000" in _lines(text)[-1]


def test_a_line_for_every_tenth_when_steps_are_slow(monkeypatch):
    """A clock that advances 10 ms per step (30 s for the run): a line at the start, at each
    tenth of the total (3 s apart, above the 1 s minimum gap) and at the end."""
    clock = iter(range(10**6))
    monkeypatch.setattr(progress, "_clock", lambda: next(clock) * 0.01)
    out = io.StringIO()
    bar = progress_bar(total=3000, desc="training", file=out)
    for _ in range(3000):
        bar.update(1)
    bar.close()
    counts = [int(line.split("|")[2].split("/")[0]) for line in _lines(out.getvalue())]
    assert counts == [0, *range(300, 3000, 300), 3000]


def test_an_unknown_total_prints_every_max_gap_seconds(monkeypatch):
    """Adaptive samplers do not know their step count: one line per 30 s of a 100 s run."""
    clock = iter(range(10**6))
    monkeypatch.setattr(progress, "_clock", lambda: float(next(clock)))
    out = io.StringIO()
    bar = progress_bar(desc="ode", unit="step", file=out)
    for _ in range(100):
        bar.update(1)
    bar.close()
    assert len(_lines(out.getvalue())) == 1 + 3 + 1  # start, 30/60/90 s, end


def test_a_terminal_gets_the_usual_tqdm_bar():
    term = _Terminal()
    bar = progress_bar(total=10, file=term)
    assert type(bar) is tqdm  # tqdm.auto's bar, not the line-by-line one
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert "\r" in term.getvalue()


def test_a_disabled_bar_writes_nothing():
    out = io.StringIO()
    for _ in progress_bar(range(5), file=out, disable=True):
        pass
    assert out.getvalue() == ""


def test_tqdm_options_of_callers_pass_through():
    """Callers keep their tqdm keywords (initial, position, postfix); a resumed run starts
    its count where it left off."""
    out = io.StringIO()
    bar = progress_bar(total=100, initial=40, position=1, desc="resumed", file=out)
    bar.update(60)
    bar.close()
    first, last = _lines(out.getvalue())[0], _lines(out.getvalue())[-1]
    assert "40/100" in first and "100/100" in last
