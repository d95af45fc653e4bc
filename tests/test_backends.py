"""The backend contract and the package's layering: every registered backend implements the
contract with its signatures; ``resolve`` gives clear errors; imports go one way (no cycle, no
backend importing the API, no production backend importing the reference, no package import
hidden inside a function)."""

import ast
import inspect
import pathlib

import pytest
import torch

from vidcom2_kernels import backends, methods
from vidcom2_kernels.backends import contract

PACKAGE = pathlib.Path(backends.__file__).parent.parent
#: import-time order of the layers: a module may import only from its own layer or those before
LAYERS = [
    {"constants", "layout", "buffers"},
    {"records", "testing", "device_layout"},
    {
        "ops.common",
        "ops.attention_row",
        "ops.centres",
        "ops.dycoke_similarity",
        "ops.frame_budgets",
        "ops.gather_rows",
        "ops.select_channels",
        "ops.select_tokens",
        "ops.token_scores",
        "cpu",
    },
    {"backends.contract", "backends.reference", "backends.torch_backend", "backends.triton_backend", "backends"},
    {"methods.base", *(f"methods.{m}.{part}" for m in methods.names() for part in ("plan", "kernels"))},
    {f"methods.{m}.{part}" for m in methods.names() for part in ("reference", "torch_ops", "triton_ops")},
    {f"methods.{m}" for m in methods.names()},
    {"methods"},
    {"pipeline"},
    {"api", "stages"},
    {"reference", "__init__"},
]
#: optional third-party packages a function may import when it is called (documented where used)
LAZY_OK = {"av", "PIL", "transformers", "triton", "lmms_eval", "vllm"}  # optional, imported where used


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p) for p in SOURCES}


def imported_modules(path: pathlib.Path, tree: ast.AST) -> list:
    """(node, package module it imports) for every ``from . import`` / ``from .x import`` and
    ``vidcom2_kernels.x`` import of the file."""
    here = module_name(path).split(".")
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join(
                    [p for p in base if p != "__init__"] + (node.module.split(".") if node.module else [])
                )
            elif node.module and node.module.startswith("vidcom2_kernels"):
                module = node.module.removeprefix("vidcom2_kernels").lstrip(".")
            else:
                continue
            for alias in node.names:  # ``from .ops import centres`` imports the module ops.centres
                submodule = f"{module}.{alias.name}" if module else alias.name
                out.append((node, submodule if submodule in MODULES else module or "__init__"))
        elif isinstance(node, ast.Import):
            out += [
                (node, a.name.removeprefix("vidcom2_kernels").lstrip(".") or "__init__")
                for a in node.names
                if a.name.startswith("vidcom2_kernels")
            ]
    return out


def layer_of(name: str):
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    return None


@pytest.mark.parametrize("name", [n for n, module in backends.REGISTRY.items() if module is not None])
def test_backends_implement_the_contract(name):
    module = backends.REGISTRY[name]
    for function in contract.FUNCTIONS:
        assert callable(getattr(module, function, None)), f"backend {name} lacks {function}"
        declared = list(inspect.signature(getattr(contract.Backend, function)).parameters)[1:]  # without self
        got = list(inspect.signature(getattr(module, function)).parameters)
        assert got == declared, f"{name}.{function}{got} differs from the contract's {declared}"


def test_resolve():
    cpu = torch.device("cpu")
    assert backends.resolve("auto", cpu) is backends.torch_backend
    assert backends.resolve("reference", cpu) is backends.reference
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.resolve("cuda", cpu)
    assert backends.name_of(backends.torch_backend) == "torch"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_no_package_import_inside_a_function(path):
    """Imports of the package sit at the top of a module, where a reader (and a cycle) sees them."""
    tree = ast.parse(path.read_text())
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        for node in ast.walk(func):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                third_party = node.__class__ is ast.Import or not node.level
                assert third_party and all(n.split(".")[0] in LAZY_OK for n in names), (
                    f"{module_name(path)}.{func.name} imports {names} inside the function"
                )


def test_layers_import_downwards():
    """The core modules import only from their own layer or earlier ones: records sit below the
    backends, the backends below the pipeline, the pipeline below the API."""
    for path in SOURCES:
        me = layer_of(module_name(path))
        if me is None:  # adapters, demo, video, vision: above everything, checked for cycles below
            continue
        for node, target in imported_modules(path, ast.parse(path.read_text())):
            other = layer_of(target) if layer_of(target) is not None else layer_of(target.rsplit(".", 1)[0])
            assert other is not None and other <= me, (
                f"{module_name(path)} (layer {me}) imports {target} (layer {other}) at line {node.lineno}"
            )


def test_production_backends_do_not_import_the_reference():
    for name in ("torch_backend", "triton_backend"):
        path = PACKAGE / "backends" / f"{name}.py"
        targets = [t for _, t in imported_modules(path, ast.parse(path.read_text()))]
        assert not [t for t in targets if "reference" in t], f"{name} imports {targets}"


def test_no_import_cycle():
    graph = {}
    for path in SOURCES:
        name = module_name(path)
        graph[name] = {t for _, t in imported_modules(path, ast.parse(path.read_text()))} - {name}
    known = set(graph)
    graph = {k: {t if t in known else t.rsplit(".", 1)[0] for t in v} & known for k, v in graph.items()}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
