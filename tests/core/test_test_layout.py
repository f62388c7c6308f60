"""The test suite's own layout: test modules never import each other, and test folders mirror the apps.

A test module imported by another runs its module-level code (route walks, parametrize lists) in both, ties
one app's tests to another's file layout, and broke collection when the tests moved into per-app folders. Shared
helpers live in ``tests/support/``; fixtures in ``conftest.py``. Folders mirror the apps so a test is found next
to its app's other tests, and an app that is split or renamed is visible here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.apps import apps

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
# Folders that are not an app's: whole-system fault tests, the client SDK and CLI (clients/python), settings tests,
# deployment tests (the images, docker-compose.yml), and the shared helpers.
NOT_APP_FOLDERS = {"chaos", "clients", "config", "deploy", "support"}


def is_test_module(path: Path) -> bool:
    """pytest's default ``python_files`` patterns (the project does not change them)."""
    return path.suffix == ".py" and (path.stem.startswith("test_") or path.stem.endswith("_test"))


def names_a_test_module(dotted: str) -> bool:
    """``tests.test_x``, ``tests.<folder>.test_x`` or anything inside one (``tests.support.*``, conftest: fine)."""
    parts = dotted.split(".")
    return parts[0] == "tests" and any(part.startswith("test_") or part.endswith("_test") for part in parts[1:])


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imported_modules(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) for everything ``source`` (the text of ``module``) imports, relative imports resolved.

    ``from a import b`` yields both ``a`` and ``a.b``, since ``b`` may be a module. String arguments of
    ``importlib.import_module`` and ``__import__`` count too, so a dynamic import cannot slip past.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in {"import_module", "__import__"} and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def python_files() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if "__pycache__" not in path.parts)


def project_apps() -> set[str]:
    """The project's own Django apps (a folder at the repository root), not Django's or third parties'."""
    return {config.name for config in apps.get_app_configs() if Path(config.path).resolve().parent == ROOT}


@pytest.mark.parametrize(
    "source, module, expected",
    [
        ("from tests.test_datasets import upload", "tests.datasets.test_x", True),
        ("from tests.datasets.test_datasets import upload", "tests.training.test_x", True),
        ("from tests.datasets import test_datasets", "tests.training.test_x", True),
        ("import tests.serving.test_serving", "tests.usage.test_x", True),
        ("from .test_datasets import CSV", "tests.datasets.test_x", True),
        ("from ..datasets.test_datasets import CSV", "tests.training.test_x", True),
        ("from . import test_datasets", "tests.datasets.test_x", True),
        ("importlib.import_module('tests.tenants.test_isolation')", "tests.core.test_x", True),
        ("from tests.support.datasets import upload", "tests.datasets.test_x", False),
        ("from tests.conftest import client_for", "tests.datasets.test_x", False),
        ("from .support import jobs", "tests.conftest", False),
        ("from training import services", "tests.training.test_x", False),
    ],
)
def test_the_check_sees_every_form_of_import(source, module, expected):
    """The layout check below is only as good as this parser: every spelling of a test-module import is seen."""
    assert any(names_a_test_module(name) for _, name in imported_modules(source, module)) is expected


def test_no_module_under_tests_imports_a_test_module():
    files = python_files()
    assert len([path for path in files if is_test_module(path)]) > 20  # the walk found the suite
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in imported_modules(
            path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py"
        )
        if names_a_test_module(name)
    ]
    assert not offenders, "move shared helpers to tests/support/ and import them from there:\n" + "\n".join(offenders)


def test_every_test_folder_mirrors_an_app():
    allowed = project_apps() | NOT_APP_FOLDERS
    assert {"core", "tenants", "datasets", "training", "serving", "usage", "dashboard"} <= project_apps()
    test_modules = [path.relative_to(TESTS) for path in python_files() if is_test_module(path)]
    at_top = sorted(str(path) for path in test_modules if len(path.parts) == 1)
    assert not at_top, f"test modules go in the folder of the app they test (tests/<app>/): {at_top}"
    strays = sorted({path.parts[0] for path in test_modules if path.parts[0] not in allowed})
    assert not strays, f"tests/<folder> must be an app's name or one of {sorted(NOT_APP_FOLDERS)}: {strays}"
    in_support = sorted(str(path) for path in test_modules if path.parts[0] == "support")
    assert not in_support, f"tests/support/ holds helpers, not tests: {in_support}"
