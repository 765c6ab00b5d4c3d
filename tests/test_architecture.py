"""The package keeps its shape: no import cycles (imports inside functions count), few loose modules,
short functions, tabs that do not import each other, and CLI groups with their own flags."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABS = ("upscale", "compare", "train", "runs", "leaderboard", "rate")


@pytest.fixture(scope="module")
def graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module, module.scan(ROOT / "srweb")


def test_no_import_cycles(graph):
    module, modules = graph
    assert module.cycles(modules) == []


def test_the_graph_sees_imports_inside_functions(graph, tmp_path):
    module, _ = graph
    package = tmp_path / "srweb"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import srweb.b\n")
    (package / "b.py").write_text("def late():\n    from srweb.a import thing\n")
    assert module.cycles(module.scan(package)) == [["srweb.a", "srweb.b"]]


def test_few_loose_modules(graph):
    module, _ = graph
    assert len(module.loose_modules(module.scan(ROOT / "srweb"), ROOT / "srweb")) <= 6


def test_no_function_over_80_lines_outside_migrations(graph):
    module, modules = graph
    longest = module.longest_functions(modules, top=1)
    assert longest[0][0] <= 80, longest


def test_tabs_do_not_import_each_other(graph):
    _, modules = graph
    for tab in TABS:
        others = {f"srweb.ui.{other}" for other in TABS if other != tab}
        assert not modules[f"srweb.ui.{tab}"].imports & others, tab


def test_each_command_group_has_its_own_flags(capsys):
    from srweb.cli import main

    with pytest.raises(SystemExit):
        main(["jobs", "list", "--help"])
    out = capsys.readouterr().out
    assert "jobs list" in out and "--lr" not in out and "--model" not in out
    with pytest.raises(SystemExit):
        main(["jobs", "submit", "--help"])
    assert "--lr" in capsys.readouterr().out
