"""The docstrings' `>>>` examples run: one test a library module that has any.

Modules are found by reading the package folders named in pyproject's package-dir (no
import to find them) and are imported by their `twotower.*` names, in this one pytest
process. A module whose examples are known to fail is listed in KNOWN_FAILURES with what
fails; it runs as an expected failure until its docstring is fixed (then the list entry
goes: an unexpected pass fails the suite).
"""

import doctest
import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# module -> why its examples fail (the example and the error)
KNOWN_FAILURES = {}


def modules_with_examples():
    with open(ROOT / "pyproject.toml", "rb") as f:
        package_dirs = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    found = []
    for package, folder in package_dirs.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts or ">>>" not in path.read_text(encoding="utf-8"):
                continue
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append(".".join((package, *parts)))
    return sorted(found)


MODULES = modules_with_examples()


def test_examples_are_found():
    # the discovery itself: samplers' docstrings carry the house's longest examples
    assert "twotower.data.samplers" in MODULES, MODULES


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[name], strict=True))
    if name in KNOWN_FAILURES else name
    for name in MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    if not tests:
        pytest.skip(f"{name}: '>>>' appears, but in no docstring example")
    report = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, (f"{name}: {runner.failures} of {runner.tries} examples "
                                  f"failed:\n" + "".join(report))
