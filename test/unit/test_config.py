"""config/*.yaml: only parameters the nodes declare, typed and in range, none restating a code default; and
docs/parameters.md is generated from the nodes' declarations."""

from pathlib import Path

import pytest
import yaml

from mbrl_control.config import node_parameters
from mbrl_control.nodes.catalog import NODE_MODULES, node_specs, parameter_reference
from mbrl_control.paths import config_dir

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in config_dir().glob("*.yaml") if "ros__parameters" in p.read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_configured_parameter_is_declared_typed_and_in_range(path: Path):
    doc = yaml.safe_load(path.read_text())
    wildcard = node_parameters(path, "__none__")
    terms = list(wildcard.get("task.terms", []))
    nodes = {node: node_specs(node, terms) for node in NODE_MODULES}
    declared_anywhere = {s.name for specs in nodes.values() for s in specs}
    assert set(wildcard) <= declared_anywhere, set(wildcard) - declared_anywhere
    for node, specs in nodes.items():
        if node not in doc:
            continue
        by_name = {s.name: s for s in specs}
        own = set(node_parameters(path, node)) - set(wildcard)
        assert own <= set(by_name), f"{node}: undeclared {own - set(by_name)}"
        for name, value in node_parameters(path, node).items():
            if name not in by_name:
                continue  # a /** value meant for other nodes
            spec = by_name[name]
            assert type(value) is type(spec.default) or (isinstance(value, list) and isinstance(spec.default, list)), (
                f"{node}.{name}: {value!r} is not a {type(spec.default).__name__}"
            )
            spec.check(value)


def _same(value, default) -> bool:
    """Equal, and of the same type (a robot file's 50 is not the default 50.0)."""
    if isinstance(value, list) and isinstance(default, list):
        return len(value) == len(default) and all(_same(v, d) for v, d in zip(value, default))
    return type(value) is type(default) and value == default


def layered_over(path: Path) -> Path | None:
    """The robot file a layer (``<robot>.<rate>hz.yaml``, ``<robot>.<model>.yaml``) is applied over."""
    base = path.with_name(path.name.split(".")[0] + ".yaml")
    return base if base != path and base.is_file() else None


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_robot_file_restates_no_code_default(path: Path):
    """A value equal to the code default is a second copy of it, left behind when the default
    changes. A ``/**`` value reaches every node that declares it: it restates a default only if
    it equals every such node's default. A layer restates what its robot file or, where that is
    silent, the code gives (its 0.0 that turns the robot file's 0.1 back to the default is not)."""
    doc = yaml.safe_load(path.read_text())
    wildcard = node_parameters(path, "__none__")
    terms = list(wildcard.get("task.terms", []))
    defaults = {node: {s.name: s.default for s in node_specs(node, terms)} for node in NODE_MODULES}
    restated = []
    for name, value in wildcard.items():
        declaring = [d[name] for d in defaults.values() if name in d]
        if declaring and all(_same(value, d) for d in declaring):
            restated.append(f"{path.name}: /**.{name} = {value!r}")
    for node, own_defaults in defaults.items():
        if node not in doc:
            continue
        own = {k: v for k, v in node_parameters(path, node).items() if k not in wildcard}
        below = own_defaults | (node_parameters(base, node) if (base := layered_over(path)) else {})
        restated += [f"{path.name}: {node}.{name} = {value!r}" for name, value in own.items()
                     if name in below and _same(value, below[name])]
    assert not restated, "equal to the code default; remove it or change the default:\n" + "\n".join(restated)


def test_the_parameter_reference_is_generated_from_the_code():
    committed = ROOT / "docs" / "parameters.md"
    assert committed.is_file() and committed.read_text() == parameter_reference(), (
        "docs/parameters.md differs from the nodes' parameters: regenerate it with "
        "`mbrl-control params --write docs/parameters.md` (or python -m mbrl_control.cli params --write ...)"
    )
