"""The dependency rule, checked on the source: layers point inward, no circles, no hidden imports.

``domain`` imports nothing of ours; ``adapters`` only ``domain``; ``application`` and
``projections`` only ``domain`` and ``adapters`` (the event log the projections follow
is handed to them by ``bootstrap``); ``bootstrap`` wires those four; ``api``,
``scheduler`` and the ``zhangben`` CLI sit on top.  An import inside a function is
allowed only for start-up time, and then says so in a comment on the line above.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zhangben import cli

ROOT = Path(__file__).resolve().parent.parent
OURS = ("domain", "adapters", "application", "bootstrap", "projections", "api", "scheduler", "sandbox", "zhangben")
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "adapters": {"domain"},
    "application": {"domain", "adapters"},
    "projections": {"domain", "adapters"},
    "bootstrap": {"domain", "adapters", "application", "projections"},
    "api": {"domain", "adapters", "application", "projections", "bootstrap"},
    "scheduler": {"domain", "adapters", "application", "projections", "bootstrap"},
    # the sandbox plays WeChat: the same signing primitives and money type, nothing of the ledger itself
    "sandbox": {"domain", "adapters"},
    "zhangben": {"domain", "adapters", "application", "projections", "bootstrap", "api", "scheduler", "sandbox"},
}


def _modules(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _imports(tree: ast.AST) -> Iterator[tuple[ast.stmt, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, node.module


@pytest.mark.parametrize("package", OURS)
def test_each_layer_imports_only_what_is_inside_it(package: str) -> None:
    wrong = []
    for path in _modules(package):
        for node, name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            top = name.split(".")[0]
            if top in OURS and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_nothing_outside_the_tests_imports_them() -> None:
    """The product and ``make bench`` stand alone: the harness they share with the tests (``zhangben.launch``,
    ``zhangben.deployment``, ``zhangben.pgserver``, ``sandbox.notices``) lives outside ``tests/``."""
    wrong = [
        f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
        for package in (*OURS, "bench")
        for path in _modules(package)
        for node, name in _imports(ast.parse(path.read_text(encoding="utf-8")))
        if name.split(".")[0] == "tests"
    ]
    assert not wrong, "\n".join(wrong)


def test_an_import_inside_a_function_says_why() -> None:
    """Imports at the top show a module's dependencies; a hidden one is there only for start-up time."""
    hidden: set[str] = set()
    for package in OURS:
        for path in _modules(package):
            source = path.read_text(encoding="utf-8")
            lines = source.splitlines()
            for function in ast.walk(ast.parse(source)):
                if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(function):
                    if isinstance(node, ast.Import | ast.ImportFrom):
                        above = lines[node.lineno - 2].strip()
                        if not (above.startswith("#") and "start-up time" in above):
                            hidden.add(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not hidden, "imports inside functions without a start-up-time comment: " + ", ".join(sorted(hidden))


@pytest.mark.parametrize("package", ["domain", "adapters", "application", "projections", "bootstrap"])
def test_each_inner_layer_imports_alone_in_a_fresh_interpreter(package: str) -> None:
    """Importing a layer alone loads nothing from the layers above it (no circle hides behind another)."""
    above = sorted(set(OURS) - ALLOWED[package] - {package})
    probe = (
        f"import sys, {package}, pkgutil, importlib\n"
        f"for m in pkgutil.walk_packages({package}.__path__, '{package}.'): importlib.import_module(m.name)\n"
        f"loaded = sorted({{n.split('.')[0] for n in sys.modules}} & set({above!r}))\n"
        "print(','.join(loaded))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"importing {package} loaded {result.stdout.strip()}"


def _handlers(parser: argparse.ArgumentParser) -> Iterator[str]:
    handler = parser.get_default("handler")
    if handler:
        yield handler
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _handlers(sub)


def test_every_command_names_a_function_that_exists() -> None:
    """The CLI loads a command's module only when it runs: a wrong name would show only then."""
    handlers = list(_handlers(cli.build_parser()))
    assert len(handlers) == 33
    for handler in handlers:
        assert callable(cli._command(handler)), handler


def test_every_option_and_command_has_help() -> None:
    """`zhangben … --help` explains every flag: an option without help text is a question left to the user."""
    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions if choice.help}
                for name, sub in action.choices.items():
                    if name not in helped:
                        missing.append(f"{path} {name} (command)")
                    walk(sub, f"{path} {name}")
            elif action.help in (None, "") and not isinstance(action, argparse._HelpAction):
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(cli.build_parser(), "zhangben")
    assert not missing, "no help text: " + ", ".join(missing)
