"""The package's layout: every module imports, imports run one way (no cycle, also through imports inside
functions), no flat name hides a module, `__all__` is the flat API, and the chapters use names that exist
and show package code that exists."""

import ast
import graphlib
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cifar_course as cc

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = ROOT / "cifar_course"

# Import edges tolerated while a cycle is being untangled (none now). An entry whose import is gone
# fails the test below, so this list cannot go stale.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()


# ------------------------------------------------------------------------------------------------
# The import graph, from the source: every `import` statement at any depth (inside functions too)


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file} for every module of the package, subpackages included."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join((package, *parts))] = path
    return names


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """{module: the package's modules it imports}. `from X import name` counts as importing X.name when
    that is a module, else X itself. Third-party imports (TFF, tfmot, ...) are not edges."""
    modules = module_names(package_dir, package)
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]  # the package `from .` refers to
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                # `import cifar_course.x.y` imports the deepest module of ours named.
                while target and target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]):
    """A list of modules that import each other in a ring, or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        return err.args[1]
    return None


def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_cycle_detector_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    pkg = write_package(tmp_path / "fake", {
        "__init__.py": "from .a import f\n",
        "a.py": "def f():\n    from .b import g  # lazy: runs only when f is called\n    return g()\n",
        "b.py": "from . import a\n\ndef g():\n    return 1\n",
        "c.py": "def h():\n    import tensorflow_federated  # third party: not an edge\n",
    })
    graph = import_graph(pkg, "fake")
    assert graph["fake.a"] == {"fake.b"} and graph["fake.b"] == {"fake.a"} and graph["fake.c"] == set()
    assert set(find_cycle(graph)) == {"fake.a", "fake.b"}


def test_the_cycle_detector_reads_every_import_form(tmp_path):
    pkg = write_package(tmp_path / "fake", {
        "__init__.py": "import fake.sub.deep\n",
        "top.py": "from fake.sub import deep\nfrom .sub.deep import x\nimport fake\n",
        "sub/__init__.py": "from . import report\n\ndef report():\n    pass\n",
        "sub/deep.py": "from .. import top\n",
    })
    graph = import_graph(pkg, "fake")
    assert graph["fake"] == {"fake.sub.deep"} and graph["fake.sub.deep"] == {"fake.top"}
    assert graph["fake.top"] == {"fake.sub.deep", "fake"} and graph["fake.sub"] == set()
    assert find_cycle(graph)  # fake -> sub.deep -> top -> fake
    del graph["fake.top"]
    graph["fake.sub.deep"] = set()
    assert find_cycle(graph) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE_DIR, "cifar_course")
    for importer, imported in KNOWN_CYCLE_EDGES:
        assert imported in graph[importer], (
            f"{importer} no longer imports {imported}: remove the pair from KNOWN_CYCLE_EDGES")
        graph[importer].discard(imported)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_synthetic_imports_nothing_of_ours_but_splits():
    graph = import_graph(PACKAGE_DIR, "cifar_course")
    assert graph["cifar_course.synthetic"] == {"cifar_course.splits"}
    assert graph["cifar_course.splits"] == set() and graph["cifar_course.config"] == set()


def test_every_module_imports_in_a_fresh_interpreter():
    # One subprocess, not one per module: Python runs cifar_course/__init__.py (which imports every
    # module, in the order of the flow) before any submodule, so a subprocess per module would repeat the
    # same imports in the same order, each paying TensorFlow's start-up. The names come from the files,
    # so a module the package forgets to import is imported here on its own.
    names = sorted(module_names(PACKAGE_DIR, "cifar_course"))
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in ('tensorflow_federated', 'tensorflow_model_optimization')"
            " if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", "TFF and tfmot must stay out of start-up"


# ------------------------------------------------------------------------------------------------
# The flat API


def submodules():
    return sorted(m.name for m in pkgutil.iter_modules(cc.__path__))


@pytest.mark.parametrize("name", submodules())
def test_no_flat_name_hides_a_module(name):
    module = importlib.import_module(f"cifar_course.{name}")
    assert getattr(cc, name, module) is module, f"cc.{name} is not the module cifar_course.{name}"


def test_the_renamed_functions_and_their_modules():
    assert cc.train.train_model is cc.train_model and cc.optim.Muon is cc.Muon
    assert cc.evaluate.evaluate_model is cc.evaluate_model
    assert cc.gradcam.compute_gradcam is cc.compute_gradcam


def test_all_is_the_flat_api():
    assert len(cc.__all__) == len(set(cc.__all__)), "a name is listed twice in __all__"
    assert [name for name in cc.__all__ if not hasattr(cc, name)] == []
    modules = set(submodules())
    public = {name for name in vars(cc) if not name.startswith("_") and name not in modules}
    assert public - set(cc.__all__) == set(), "public names missing from __all__"


def test_the_docstring_lists_every_module():
    listed = set(re.findall(r"^    (\w+)\s{2,}", cc.__doc__, re.MULTILINE))
    assert set(submodules()) - {"__main__"} <= listed


# ------------------------------------------------------------------------------------------------
# The chapters: the names they call exist, and the package code they show is where they say


CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_use_names_the_package_has(chapter):
    used = set(re.findall(r"\bcc\.(\w+)", chapter.read_text()))
    assert sorted(name for name in used if not hasattr(cc, name)) == []


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_literalinclude_pyobjects_exist(chapter):
    text = chapter.read_text()
    for path, obj in re.findall(r"```\{literalinclude\} (\S+)\n:pyobject: (\S+)", text):
        tree = ast.parse((chapter.parent / path).read_text())
        scope = tree.body
        for part in obj.split("."):
            found = [node for node in scope
                     if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == part]
            assert found, f"{chapter.name}: {obj} is not in {path}"
            scope = found[0].body
