"""The installed package holds only the product: the harness that tests and benchmarks share
(mbrl_control_testing) stays outside it, and nothing in the product depends on it."""

import ast
from pathlib import Path

import mbrl_control
import mbrl_control_testing

PRODUCT = Path(mbrl_control.__file__).parent
HARNESS = "mbrl_control_testing"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_module_of_the_product_imports_the_harness():
    sources = sorted(PRODUCT.rglob("*.py"))
    assert len(sources) > 50
    offenders = [str(p.relative_to(PRODUCT)) for p in sources
                 if any(m.split(".")[0] == HARNESS for m in imported_modules(p))]
    assert not offenders, f"the installed package must not import {HARNESS}: {offenders}"


def test_the_harness_lives_outside_the_installed_package():
    harness = Path(mbrl_control_testing.__file__).parent
    assert PRODUCT not in harness.parents and harness != PRODUCT
    # setup.py installs mbrl_control and its subpackages only (find_packages(include=[PACKAGE, PACKAGE.*])).
    for moved in ("fault_probe.py", "core/episode.py", "core/learning/synthetic.py", "core/estimation/evaluation.py"):
        assert not (PRODUCT / moved).exists(), moved
