"""Argument rules for the networks, checked before any tensor is built.

Each network states its arguments once, as a table next to its constructor::

    @checked_args("unet", dict(channels=POSITIVE_INT, ...),
                  Relation("resolution", lambda a: ..., lambda a: "divisible by ..."))
    def __init__(self, channels: int = 64, ...): ...

A value outside its rule, a broken relation between arguments or an unknown keyword is refused
with one line that names the argument and what is allowed, e.g.
``ValueError: unet: channels must be a positive integer, got -4``.
"""
from __future__ import annotations

import functools
import inspect
from numbers import Integral, Real
from typing import Any, Callable, NamedTuple

__all__ = ["Rule", "Relation", "checked_args", "check_values", "one_of", "int_at_least",
           "POSITIVE_INT", "NONNEGATIVE_INT", "OPTIONAL_POSITIVE_INT", "POSITIVE_INT_LIST",
           "INT_LIST", "DROPOUT", "POSITIVE_REAL", "OPTIONAL_POSITIVE_REAL", "EMBEDDING"]


class Rule(NamedTuple):
    """``ok(value)`` decides; ``allowed`` completes "<arg> must be …"."""
    ok: Callable[[Any], bool]
    allowed: str


class Relation(NamedTuple):
    """A condition on several arguments, blamed on ``arg``; ``allowed(args)`` says what fits."""
    arg: str
    ok: Callable[[dict], bool]
    allowed: Callable[[dict], str]


def _int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _int_list(v, nonempty: bool) -> bool:
    return (isinstance(v, (list, tuple)) and (len(v) > 0 or not nonempty)
            and all(_int(m) and m > 0 for m in v))


def one_of(*choices) -> Rule:
    return Rule(lambda v: v in choices, f"one of {list(choices)}")


def int_at_least(k: int) -> Rule:
    return Rule(lambda v: _int(v) and v >= k,
                "a positive integer" if k == 1 else f"an integer ≥ {k}")


POSITIVE_INT = int_at_least(1)
NONNEGATIVE_INT = int_at_least(0)
OPTIONAL_POSITIVE_INT = Rule(lambda v: v is None or _int(v) and v > 0,
                             "None or a positive integer")
POSITIVE_INT_LIST = Rule(lambda v: _int_list(v, nonempty=True),
                         "a non-empty list of positive integers")
INT_LIST = Rule(lambda v: _int_list(v, nonempty=False), "a list of positive integers")
DROPOUT = Rule(lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)")
POSITIVE_REAL = Rule(lambda v: _real(v) and v > 0, "a positive number")
OPTIONAL_POSITIVE_REAL = Rule(lambda v: v is None or _real(v) and v > 0,
                              "None or a positive number")
EMBEDDING = one_of("fourier", "sinusoidal")


def _bind(network: str, sig: inspect.Signature, args, kwargs) -> dict:
    accepted = [p for p in sig.parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{network}: unknown argument{'s' * (len(unknown) > 1)} "
                         f"{', '.join(unknown)}; accepted: {', '.join(accepted)}")
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"{network}: {e}; accepted: {', '.join(accepted)}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def check_values(network: str, values: dict, rules: dict[str, Rule],
                 relations: tuple[Relation, ...] = ()) -> None:
    """Raise ValueError on the first argument outside its rule, then on the first broken
    relation (relations may assume every single rule holds)."""
    for name, rule in rules.items():
        if not rule.ok(values[name]):
            raise ValueError(f"{network}: {name} must be {rule.allowed}, got {values[name]!r}")
    for rel in relations:
        if not rel.ok(values):
            raise ValueError(f"{network}: {rel.arg} must be {rel.allowed(values)}, "
                             f"got {values[rel.arg]!r}")


def checked_args(network: str, rules: dict[str, Rule], *relations: Relation):
    """Decorate a network's ``__init__`` so its arguments are checked against ``rules`` (one
    per parameter, enforced when the class is defined) and ``relations`` before it runs."""
    def wrap(init):
        sig = inspect.signature(init)
        params = [p for p in sig.parameters if p != "self"]
        if set(params) != set(rules):
            raise TypeError(f"{network}: rules for {sorted(rules)} but parameters {sorted(params)}")

        @functools.wraps(init)
        def checked_init(*args, **kwargs):
            values = _bind(network, sig, args, kwargs)
            check_values(network, values, rules, relations)
            init(*args, **kwargs)
        checked_init.rules, checked_init.relations = rules, relations
        return checked_init
    return wrap
