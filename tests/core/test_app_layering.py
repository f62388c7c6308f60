"""The apps follow the data flow, each importing only those before it, and Celery tasks never loop back.

Read from the source (every import, at the top of a module or inside a function), so a lazy import cannot hide a
tie the wrong way round.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["core", "tenants", "events", "datasets", "training", "serving", "usage", "dashboard"]
# Modules that load TensorFlow: imported only inside functions of the worker and the serving process.
TENSORFLOW = {"tensorflow", "keras", "tf2onnx", "onnxruntime"}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for app in ORDER:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts:
                found.append((app, path))
    return found


def _imports(path: Path) -> list[tuple[str, ast.AST, str]]:
    """(imported module, node, where) for every import in the file; ``where`` is "module" (run on import),
    "annotations" (under ``if TYPE_CHECKING:``, never run) or "function" (run when the function is called)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = {id(node): "module" for node in tree.body}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            where |= {id(child): "annotations" for child in node.body}
    found = []
    for node in ast.walk(tree):
        place = where.get(id(node), "function")
        if isinstance(node, ast.Import):
            found.extend((alias.name, node, place) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node, place))
            found.extend((f"{node.module}.{alias.name}", node, place) for alias in node.names)
    return found


def test_each_app_imports_only_the_apps_before_it():
    wrong = []
    for app, path in _modules():
        allowed = set(ORDER[: ORDER.index(app) + 1])
        for module, node, _ in _imports(path):
            root = module.split(".")[0]
            if root in ORDER and root not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module}")
    assert not wrong, "imports against the data flow:\n" + "\n".join(sorted(set(wrong)))


def test_services_never_import_task_modules():
    """Services send tasks by name (``core.queue``); task modules import services, never the reverse."""
    wrong = []
    for _, path in _modules():
        if path.name in {"services.py", "selectors.py"}:
            for module, node, _ in _imports(path):
                if module.endswith(".tasks") or ".tasks." in module:
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_api_side_never_imports_tensorflow_at_module_level():
    """TensorFlow loads only inside the trainer's and the serving runtime's functions."""
    wrong = []
    for _, path in _modules():
        for module, node, where in _imports(path):
            if module.split(".")[0] in TENSORFLOW and where == "module":
                relative = path.relative_to(ROOT).as_posix()
                if not relative.startswith(("training/trainer/", "serving/runtime/")):
                    wrong.append(f"{relative}:{node.lineno} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_lazy_imports_of_the_platforms_own_modules_say_why():
    """An import inside a function hides a tie; it is there only for TensorFlow (or the Django app registry),
    and the line before it or the import itself says so in a comment."""
    unexplained = []
    for _, path in _modules():
        lines = path.read_text().splitlines()
        for module, node, where in _imports(path):
            if where != "function" or module.split(".")[0] not in ORDER:
                continue
            nearby = " ".join(lines[max(0, node.lineno - 3) : node.end_lineno]).lower()
            if "#" not in nearby and '"""' not in nearby:
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module} inside a function")
    assert not unexplained, "\n".join(sorted(set(unexplained)))
