"""The ``sdeflow`` command line: train, sample, evaluate, guide, inpaint, score likelihoods and
list what exists. One module per command group; :mod:`.common` holds what they share.

Every error a user can cause (a bad option value, a missing or damaged checkpoint file — a
:class:`~sdeflow.checkpoint.CheckpointError` —, malformed JSON) ends the command with one line
``sdeflow <command>: error: <message>`` on stderr and exit status 2; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import autoencoder, controllable, distill, info, likelihood, sample, serve, train

__all__ = ["main", "build_parser"]

# What a user's input can raise: ValueError covers CheckpointError and json.JSONDecodeError;
# OSError covers FileNotFoundError, IsADirectoryError and PermissionError; TypeError, a
# config or network given arguments it does not take.
USER_ERRORS = (ValueError, OSError, TypeError)

COMMANDS = (train.add_train, sample.add_sample, sample.add_evaluate, sample.add_tune_steps,
            sample.add_choose_steps, sample.add_ems,
            train.add_train_classifier, autoencoder.add_train_autoencoder, distill.add_distill,
            controllable.add_inpaint, controllable.add_colorize, controllable.add_sr,
            info.add_demo, likelihood.add_likelihood, likelihood.add_interpolate, info.add_list,
            serve.add_serve)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdeflow", description="Continuous-time score-based diffusion models: train, "
        "sample with any SDE/ODE/PC solver, evaluate, score exact likelihoods, interpolate, "
        "and plot. Run 'sdeflow COMMAND --help' for details.")
    p.add_argument("--version", action="version", version=f"sdeflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return p


def one_line(e: BaseException) -> str:
    """The error's message on one line (its type's name if it has none)."""
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return "; ".join(lines) or type(e).__name__


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"sdeflow {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
