"""The import graph of edge_fer, training and convert, read from the source (nothing is imported), and its rules.

Every ``import`` counts, at module level or inside a function: a lazy import still runs in the same
direction when it runs. The rules (``python scripts/devtools/layers.py`` prints any breach and exits 1):

- each module belongs to a layer (:data:`LAYERS`) and imports only from its own layer and those below
  it (:data:`MAY_IMPORT`): ``edge_fer`` imports nothing of the workstation;
- the device layer imports no TensorFlow or Keras (:data:`DEVICE_NEVER`), not even lazily;
- no cycle between modules inside a package of :data:`ACYCLIC`.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("edge_fer", "training", "convert")

# Layer names, bottom to top; a module is in the layer of the longest prefix of its name listed here.
LAYERS = {
    "edge_fer": "device",
    "training.common": "common",
    "training": "trainer",
    "convert": "conversion",
    "training.pipelines": "pipelines",
    "training.__main__": "entry",
}
MAY_IMPORT = {
    "device": {"device"},
    "common": {"device", "common"},
    "trainer": {"device", "common", "trainer"},
    "conversion": {"device", "common", "conversion"},
    "pipelines": {"device", "common", "trainer", "conversion", "pipelines"},
    "entry": {"device", "common", "trainer", "conversion", "pipelines", "entry"},
}
# Third-party packages the device never imports: a Pi has none of them.
DEVICE_NEVER = ("tensorflow", "keras", "tf_keras")
# Packages whose modules must not import each other in a circle.
ACYCLIC = ("edge_fer", "training", "convert")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _imports(path: Path, module: str, known: set[str]) -> tuple[set[str], set[str]]:
    """The repository modules ``path`` imports (``from pkg import mod`` counts as ``pkg.mod`` when that exists),
    and the top-level names of everything else it imports."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    external: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in PACKAGES:
                external.add(top)
                continue
            while name and name not in known:  # `import a.b.c` imports a.b.c, or the deepest module of it
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found, external


@dataclass
class Graph:
    edges: dict[str, set[str]] = field(default_factory=dict)  # module -> repository modules it imports
    external: dict[str, set[str]] = field(default_factory=dict)  # module -> other top-level packages it imports

    @classmethod
    def read(cls, root: Path = ROOT) -> Graph:
        paths = {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
        known = set(paths)
        read = {m: _imports(p, m, known) for m, p in paths.items()}
        return cls({m: r[0] for m, r in read.items()}, {m: r[1] for m, r in read.items()})

    def breaches(self) -> list[str]:
        """Imports that run from a layer to one it may not import (upward, or sideways between trainer and
        conversion), and TensorFlow or Keras imported by the device."""
        layered = [f"{m} ({layer_of(m)}) imports {d} ({layer_of(d)})" for m, deps in sorted(self.edges.items())
                   for d in sorted(deps) if layer_of(d) not in MAY_IMPORT[layer_of(m)]]
        heavy = [f"{m} (device) imports {x}" for m, names in sorted(self.external.items())
                 if layer_of(m) == "device" for x in sorted(names) if x in DEVICE_NEVER]
        return layered + heavy

    def cycles(self, package: str) -> list[list[str]]:
        """Circles among the modules of ``package`` (one per strongly connected component of two or more)."""
        nodes = [m for m in self.edges if m == package or m.startswith(package + ".")]
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []

        def visit(v: str) -> None:  # Tarjan's strongly connected components
            index[v] = low[v] = len(index)
            stack.append(v)
            on_stack.add(v)
            for w in self.edges[v]:
                if w not in nodes:
                    continue
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

        for v in nodes:
            if v not in index:
                visit(v)
        return found


def main() -> int:
    graph = Graph.read()
    problems = graph.breaches() + [f"import cycle in {pkg}: {' -> '.join(c)}"
                                   for pkg in ACYCLIC for c in graph.cycles(pkg)]
    for line in problems:
        print(line)
    print(f"{len(graph.edges)} modules; {'no breach' if not problems else f'{len(problems)} problem(s)'}",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
