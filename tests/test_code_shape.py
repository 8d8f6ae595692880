"""The shape of the code that docs/architecture.md promises: short functions (the exceptions are
listed there with why), and no module reaching into another package's private helpers."""
import ast
from pathlib import Path

SRC = Path(__file__).parent.parent / "src" / "sdeflow"
MAX_LINES = 60
# functions allowed to be longer, each with its reason in docs/architecture.md
LONG_FUNCTIONS: set[str] = set()


def _code_lines(fn: ast.FunctionDef) -> int:
    """Lines of a function without its docstring."""
    body = fn.body
    doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
        isinstance(body[0].value.value, str)
    start = (body[1].lineno if len(body) > 1 else body[0].end_lineno) if doc else body[0].lineno
    return fn.end_lineno - start + 1


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text())


def test_no_function_is_longer_than_a_screen():
    long = {f"{p.relative_to(SRC)}:{n.name}": _code_lines(n) for p, tree in _modules()
            for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and _code_lines(n) > MAX_LINES}
    assert set(long) <= LONG_FUNCTIONS, {k: v for k, v in long.items() if k not in LONG_FUNCTIONS}


def _package(path: Path) -> tuple[str, ...]:
    return path.relative_to(SRC).parent.parts


def test_no_private_imports_across_packages():
    bad = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                # the package the import resolves to, relative to sdeflow/
                here = _package(path)
                target = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                mod = tuple((node.module or "").split(".")) if node.module else ()
                if target + mod[:-1] == here or (not mod and target == here):
                    continue  # a module of the same package
                bad += [f"{path.relative_to(SRC)}: {a.name} from {node.module}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, bad
