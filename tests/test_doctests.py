"""Every docstring example in the ``sharpness`` package runs and prints what it says (DESIGN §6.7: checked examples).

One test per module, found by walking the package, so a new module's examples are run without editing this
file. Modules whose optional third-party import is missing (the Lightning and TensorBoard integrations) are
skipped with the reason; any other import error fails.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import types

import pytest

import sharpness

#: Subpackages of optional integrations: an ImportError there means "extra not installed", not a bug.
OPTIONAL = ("sharpness.integrations.",)
#: Modules known to carry examples; if discovery ever stops finding them, the suite must say so.
KNOWN_EXAMPLES = ("sharpness.hessian.operator", "sharpness.files.rundir", "sharpness.linalg.eigen", "sharpness.linalg.trace")


def _module_names() -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(sharpness.__path__, "sharpness.")]
    # __main__ runs the CLI when imported.
    return ["sharpness"] + sorted(n for n in names if not n.endswith(".__main__"))


MODULES = _module_names()


def run_doctests(module: types.ModuleType) -> tuple[int, int, str]:
    """(failed, attempted, report) for the examples of ``module`` and everything defined in it."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    lines: list[str] = []
    runner = doctest.DocTestRunner()
    failed = attempted = 0
    for test in finder.find(module, module.__name__):
        result = runner.run(test, out=lines.append)
        failed, attempted = failed + result.failed, attempted + result.attempted
    return failed, attempted, "".join(lines)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as err:
        if name.startswith(OPTIONAL):
            pytest.skip(f"optional dependency missing: {err}")
        raise
    failed, attempted, report = run_doctests(module)
    assert failed == 0, f"{failed} of {attempted} examples failed in {name}:\n{report}"


def test_discovery_finds_the_examples() -> None:
    assert set(KNOWN_EXAMPLES) <= set(MODULES)
    for name in KNOWN_EXAMPLES:
        _, attempted, _ = run_doctests(importlib.import_module(name))
        assert attempted > 0, f"no examples found in {name}"


def test_a_false_example_fails() -> None:
    module = types.ModuleType("fake_module", ">>> 1 + 1\n3\n")
    failed, attempted, report = run_doctests(module)
    assert (failed, attempted) == (1, 1)
    assert "Expected:" in report
