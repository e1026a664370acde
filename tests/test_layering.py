"""The dependency rules of DESIGN.md, checked on the source: no import cycles among gan/ modules, no imports inside
functions (the optional or slow ones are listed here, each with its reason), and every module imports only from
its own layer or the layers below it."""

import ast
from pathlib import Path

import pytest

GAN = Path(__file__).resolve().parent.parent / "gan"

# Layers, bottom to top. A module may import gan modules of its own layer or a lower one, never a higher one.
LAYERS = [
    # checkpoint: atomic files; outputs: output paths checked before work; hparams: TensorBoard protos; tags: what
    # each tag means; grids: labelled PNG grids
    {
        "gan.errors",
        "gan.registry",
        "gan.interrupt",
        "gan.labels",
        "gan.checkpoint",
        "gan.outputs",
        "gan.hparams",
        "gan.tags",
        "gan.grids",
    },
    {"gan.norms", "gan.spectral", "gan.models", "gan.data", "gan.losses", "gan.metrics", "gan.lipschitz"},
    {"gan.config"},  # knows the layers' registries (names to validate), never builds anything
    {"gan.distributed"},  # process groups for torchrun; knows only errors
    {"gan.trainer", "gan.hooks", "gan.writers"},
    {"gan.build"},
    {"gan.run"},
    {"gan.sweep", "gan.compare"},
    {"gan.evaluate", "gan.cli"},
]
# Imports allowed inside functions: (module, imported name) -> why.
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("gan.build", ":fcntl"): "module level, inside try/except ImportError: POSIX only (the classifier cache's lock)",
    ("gan.run", ":fcntl"): "module level, inside try/except ImportError: POSIX only (the run folder's lock)",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(GAN.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.startswith("gan")]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative import
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            name = ".".join(base + ([node.module] if node.module else []))
        else:
            name = node.module or ""
        if not name.startswith("gan"):
            return []
        # `from gan import spectral` imports the submodule gan.spectral
        subs = [f"{name}.{a.name}" for a in node.names if (GAN.parent / f"{name}.{a.name}".replace(".", "/")).exists()
                or (GAN.parent / (f"{name}.{a.name}".replace(".", "/") + ".py")).exists()]  # fmt: skip
        return subs or [name]
    return []


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    edges: dict[str, set[str]] = {}
    lazy: list[tuple[str, str, int]] = []
    for path in sorted(GAN.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges.setdefault(module, set())
        top_level = set(map(id, tree.body))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if id(node) not in top_level:
                for alias in node.names:
                    lazy.append((module, (getattr(node, "module", None) or "") + ":" + alias.name, node.lineno))
            for target in _targets(node, module, path.name == "__init__.py"):
                if target != module:
                    edges[module].add(target)
    return edges, lazy


def _layer(module: str) -> int:
    for index, layer in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in layer):
            return index
    raise AssertionError(f"{module} is in no layer of tests/test_layering.py: add it where it belongs")


def test_no_import_cycles():
    edges, _ = _graph()
    seen: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt.startswith(node + "."):
                continue  # a package's __init__ importing its own submodules is not a cycle
            if seen.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt, [*stack, nxt])
        seen[node] = 2

    for module in sorted(edges):
        if module not in seen:
            visit(module, [module])


def test_no_imports_inside_functions():
    _, lazy = _graph()
    unexpected = [(m, name, line) for m, name, line in lazy if (m, name) not in LAZY_IMPORTS]
    assert not unexpected, f"imports inside functions (move them up, or list them with a reason): {unexpected}"


def test_modules_import_only_their_own_layer_or_lower():
    edges, _ = _graph()
    upward = [
        f"{src} -> {dst}"
        for src, targets in edges.items()
        if src != "gan"
        for dst in targets
        if dst != "gan" and _layer(dst) > _layer(src)
    ]
    assert not upward, "imports against the layering: " + ", ".join(sorted(upward))


def test_models_and_data_take_plain_arguments():
    """Neither the layers nor the training loop read a Config: only gan.config, gan.build and above do."""
    edges, _ = _graph()
    readers = sorted(src for src, targets in edges.items() if "gan.config" in targets)
    # sweep and compare: only gan.config's hardened YAML reader (sweep files, a run's config.yaml)
    assert readers == ["gan.build", "gan.compare", "gan.run", "gan.sweep"], readers
