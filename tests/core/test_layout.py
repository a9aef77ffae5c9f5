"""The shape of the package, checked: no import cycles, a core that names no family, faces that
stand apart, and no route passed around as a dict."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "jupyter_compute"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every module of the package ``path`` imports, at any depth (a function's lazy import is still
    a dependency), and those kept for type checkers too: a cycle there is still a cycle to a reader
    and to the tools that follow imports."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                subs = {f"{mod}.{a.name}" for a in child.names}
                found.update(subs & modules)
                if subs - modules:  # names defined in the module (or package) itself
                    found.add(mod)
            visit(child)

    visit(ast.parse(path.read_text()))
    out = set()
    for mod in found:
        # A name imported from a module is that module; from a package, the package's submodule.
        while mod and mod not in modules:
            mod = mod.rpartition(".")[0]
        if mod and mod != name:
            out.add(mod)
    return out


def graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    return {_module_name(f): _imports(f, modules) for f in files}


def find_cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Each elementary cycle found by a depth-first walk (enough to name every offending edge)."""
    cycles, state, stack = [], {}, []

    def walk(n: str) -> None:
        state[n] = "open"
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                walk(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(g):
        if n not in state:
            walk(n)
    return cycles


def test_the_cycle_finder_finds_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_graph_sees_relative_lazy_and_package_imports():
    g = graph()
    # Lazy imports inside functions count.
    assert "jupyter_compute.transport.kernel" in g["jupyter_compute.families.local.backend"]
    # ``from . import x`` names the submodule x.
    assert "jupyter_compute.families.azureml.in_job" in g["jupyter_compute.families.azureml.jobs"]
    assert len(g) > 40


def test_no_import_cycles():
    cycles = find_cycles(graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_core_names_no_family_and_no_face():
    g = graph()
    for mod, deps in g.items():
        if mod.startswith("jupyter_compute.core"):
            bad = {d for d in deps if d.startswith(("jupyter_compute.families", "jupyter_compute.notebook",
                                                    "jupyter_compute.cli", "jupyter_compute.handlers",
                                                    "jupyter_compute.commands", "jupyter_compute.app"))}
            assert not bad, f"{mod} imports {bad}"
            source = (PACKAGE.parent / (mod.replace(".", "/") + ".py"))
            if not source.exists():
                source = PACKAGE.parent / mod.replace(".", "/") / "__init__.py"
            text = source.read_text().lower()
            for word in ("azure", "dask", "ssh"):
                assert word not in text, f"{mod} names the {word} family"


def test_faces_stand_apart():
    g = graph()
    faces = {"jupyter_compute.notebook.magics", "jupyter_compute.notebook.widgets", "jupyter_compute.handlers",
             "jupyter_compute.app", "jupyter_compute.notebook.output"}
    for face in faces:
        assert "jupyter_compute.cli" not in g[face], f"{face} imports the command line"
    # The REST handlers call the core only.
    assert all(d.startswith("jupyter_compute.core") or d == "jupyter_compute.openapi"
               for d in g["jupyter_compute.handlers"]), g["jupyter_compute.handlers"]
    # A family reaches another only through shared machinery, never directly.
    for mod, deps in g.items():
        if mod.startswith("jupyter_compute.families."):
            family = mod.split(".")[2]
            others = {d for d in deps if d.startswith("jupyter_compute.families.") and d.split(".")[2] != family}
            assert not others, f"{mod} imports another family: {others}"


def test_no_module_passes_routes_as_dicts():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for word in ("route_info", "route_for(", '"route":', "'route':"):
            assert word not in text, f"{path.relative_to(PACKAGE.parent)} still has {word!r}"


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``code``."""
    import json
    import subprocess
    import sys

    probe = f"import json, sys\n{code}\nprint(json.dumps([m for m in {list(modules)!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_what_every_cli_call_and_server_start_loads_leaves_out_the_connection_libraries():
    """The families load with every CLI call and server start; asyncssh and aiohttp come in only
    where an SSH connection or a Jupyter server is reached (a quarter of a second of a CLI call)."""
    code = ("from jupyter_compute.core.workspace import Compute\n"
            "c = Compute.from_config()\n"
            "kinds = [k for f in c.families for b in f.backends for k in b.kinds]\n"
            "assert 'ssh' in kinds and 'jupyter' in kinds, kinds")
    assert _loaded_after(code, ("asyncssh", "aiohttp")) == []


def test_a_local_kernel_supervisor_leaves_out_the_models():
    """A supervisor starts with every local-kernel target: it keeps the store up to date and needs
    neither pydantic nor the entry-point machinery."""
    assert _loaded_after("import jupyter_compute.families.local.supervisor",
                         ("pydantic", "importlib.metadata", "jupyter_compute.core.models")) == []
