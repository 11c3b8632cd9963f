"""The package's layering, read from the source: library modules import no click (only the
command-line layer does), and no two package modules import each other in a circle.

Every import counts, also one inside a function (a lazy import still ties the modules)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mrhp_prep"


def _is_cli_layer(module: str) -> bool:
    """The command line: `cli`, its options, the pipeline command and the `*commands` /
    `*_command` modules that hold click commands."""
    name = module.rsplit(".", 1)[-1]
    return (name in ("cli", "cli_options", "pipeline", "__main__")
            or name.endswith("commands") or name.endswith("_command"))


def _modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package's __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _imports(module: str, path: Path, is_package: bool) -> list[tuple[str, int]]:
    """Every module name an import statement of `path` names, absolute, with its line."""
    package = module if is_package else module.rsplit(".", 1)[0]
    named = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            named.append((source, node.lineno))
            named += [(f"{source}.{alias.name}", node.lineno) for alias in node.names]
    return named


def test_library_modules_import_no_click():
    modules = _modules()
    offending = []
    for module, (path, is_package) in modules.items():
        if _is_cli_layer(module):
            continue
        for name, line in _imports(module, path, is_package):
            if name == "click" or name.startswith("click."):
                offending.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
            elif name in modules and _is_cli_layer(name):
                offending.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports the "
                                 f"command-line module {name}")
    assert not offending, "library code must not import click:\n" + "\n".join(offending)


def test_the_command_line_layer_is_what_the_rule_says():
    """The rule above must not pass by calling more modules command line than these."""
    assert sorted(m for m in _modules() if _is_cli_layer(m)) == [
        "mrhp_prep.__main__", "mrhp_prep.cli", "mrhp_prep.cli_options",
        "mrhp_prep.data.commands", "mrhp_prep.data.fetch_command", "mrhp_prep.pipeline",
        "mrhp_prep.probe.commands", "mrhp_prep.text.commands", "mrhp_prep.train.commands",
        "mrhp_prep.train.compare_command", "mrhp_prep.views.commands",
        "mrhp_prep.vision.commands"]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles_between_package_modules():
    modules = _modules()
    graph = {module: {name for name, _ in _imports(module, path, is_package)
                      if name in modules and name != module}
             for module, (path, is_package) in modules.items()}
    assert not _cycles(graph), f"modules that import each other in a circle: {_cycles(graph)}"


def test_the_circle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_reading_a_run_folder_loads_no_torch():
    """`compare` and `report` read config.yaml, metrics.json and predictions: the modules that
    do it import no torch (seconds of start-up, and no training stack to read YAML)."""
    import subprocess
    import sys

    modules = ["mrhp_prep.train.run_folder", "mrhp_prep.train.report.compare",
               "mrhp_prep.train.report.compare_report", "mrhp_prep.views.report",
               "mrhp_prep.train.settings.option_conflicts"]
    code = (f"import sys\nfor m in {modules!r}:\n    __import__(m)\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, check=True).stdout.strip()
    assert loaded == "[]", loaded
