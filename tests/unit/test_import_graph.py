"""lib/'s imports run one way, top to bottom (ARCHITECTURE.md), with no cycle.

The graph is read with ``ast``, not by importing: every ``import`` counts, at module level, inside
functions (lazy) and under ``if TYPE_CHECKING`` alike, in all its forms (``from . import x``,
``from .pkg import mod``, ``import lib.x``). A new module must be given a layer here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "lib"

# Bottom to top: a module may import its own layer (no cycle) or any layer below it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "values",
        (
            "lib.errors",
            "lib.jsontext",
            "lib.retry",
            "lib.models",
            "lib.rates",
            "lib.config",
            "lib.schema",
            "lib.logs",
            "lib.ssrf",
            "lib.crypto",
        ),
    ),
    ("database", ("lib.db", "lib.migrate", "lib.aws")),
    ("storage", ("lib.store",)),
    ("core", ("lib.registry", "lib.steps", "lib.context", "lib.attempts", "lib.drain", "lib.core")),
    (
        "features",
        (
            "lib.schedules",
            "lib.alerts",
            "lib.ratelimit",
            "lib.retention",
            "lib.rotation",
            "lib.metrics",
            "lib.fanout",
            "lib.deployment",
            "lib.kick",
            "lib.worker",
            "lib.handlers",
        ),
    ),
    ("facade", ("lib.queue", "lib", "lib.client")),
    ("cli", ("lib.cli", "lib.__main__")),
)

# Imports inside functions that stay: each keeps a cold start (or a path most calls never take)
# from paying for a heavy module. (importer, imported) → why. Anything else goes to the top.
ALLOWED_LAZY: dict[tuple[str, str], str] = {
    ("lib.alerts", "urllib"): "urllib.request loads http.client and email: only a digest's webhook pays",
    ("lib.aws", "boto3"): "boto3 takes ~300 ms to import: only archives and SES pay",
    ("lib.aws", "botocore"): "as boto3",
    ("lib.cli.serve", "werkzeug"): "only the dev server needs the WSGI server",
    ("lib.cli.serve", "croniter"): "only the dev server's cron emulation needs croniter",
    ("lib.crypto", "cryptography"): "an app without sensitive types never loads cryptography",
    ("lib.drain", "asyncio"): "only async handlers need an event loop",
    ("lib.handlers.email_ses", "botocore"): "as boto3: only a failed send inspects botocore's error",
    ("lib.handlers.http", "ssl"): "only https calls need an SSL context",
    ("lib.handlers.http", "http"): "http.client is loaded by the http job type's first call only",
    ("lib.metrics", "prometheus_client"): "only a metrics scrape loads prometheus_client",
    ("lib.migrate", "alembic"): "alembic takes ~150 ms to import: only migrating pays",
    ("lib.schedules.slots", "croniter"): "croniter is loaded when a cron expression is read",
    ("lib.store.jobs", "sqlalchemy"): "PostgreSQL's insert, for debounced enqueues on PostgreSQL only",
    ("lib.store.jobs", "psycopg"): "only PostgreSQL batches use COPY: SQLite apps never load the driver",
    ("lib.worker", "psycopg"): "a SQLite-only worker never loads the PostgreSQL driver",
    ("lib.schema", "sqlalchemy"): "the PostgreSQL JSONB type is loaded for that dialect only",
    ("lib.db", "sqlite3"): "a PostgreSQL app never loads the SQLite driver",
    ("lib.fanout", "urllib"): "urllib.request loads email and more: only a fan-out drain pays",
    # The facade builds its services on first use: an enqueue's cold start loads none of these.
    ("lib.queue", "lib.drain"): "the drain (and what it wires in) is loaded by the first drain only",
    ("lib.queue", "lib.alerts"): "the dead-letter hook is wired into the drain on its first use",
    ("lib.queue", "lib.schedules"): "schedules are loaded by a drain or a schedule route only",
    ("lib.queue", "lib.retention"): "only cleanup, erasure and archives load retention",
    ("lib.queue", "lib.metrics"): "only a metrics scrape loads the metrics service",
    ("lib.queue", "lib.rotation"): "only a key rotation loads it",
    ("lib.queue", "lib.attempts"): "only reading a job's attempt history loads it (and the claim store)",
    ("lib.queue", "lib.store.attempts"): "as lib.attempts",
}

BANNED = ("flask", "api")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str  # a lib module, or the top-level name of anything else
    line: int
    lazy: bool  # inside a function
    typing_only: bool  # under if TYPE_CHECKING


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in LIB.rglob("*.py")}


def _targets(source: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield _known(alias.name)
        return
    if node.level:
        base = source.split(".")
        if not is_package:
            base.pop()
        base = base[: len(base) - (node.level - 1)]
        module = ".".join([*base, *([node.module] if node.module else [])])
    else:
        module = node.module or ""
    for alias in node.names:
        # ``from .pkg import mod`` imports the module pkg.mod; ``from .mod import name`` imports mod.
        sub = f"{module}.{alias.name}"
        yield sub if sub in MODULES else _known(module)


def _known(name: str) -> str:
    """A lib module (the longest known prefix), or the top-level package of anything else."""
    parts = name.split(".")
    if parts[0] != "lib":
        return parts[0]
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def edges_of(source: str, path: Path) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))

    def walk(node: ast.AST, lazy: bool, typing_only: bool) -> Iterator[Edge]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in _targets(source, path.name == "__init__.py", child):
                    yield Edge(source, target, child.lineno, lazy, typing_only)
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from walk(child, inner, typing_only or _is_type_checking(child))

    yield from walk(tree, False, False)


EDGES = [edge for name, path in sorted(MODULES.items()) for edge in edges_of(name, path)]


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def _where(edge: Edge) -> str:
    return f"{MODULES[edge.source].relative_to(ROOT)}:{edge.line}"


def test_the_walk_sees_every_form() -> None:
    """The reader itself: relative, package and lazy forms all resolve to modules."""
    found = {(e.source, e.target) for e in EDGES}
    assert ("lib.queue", "lib.drain") in found  # from .drain import Drainer
    assert ("lib.drain", "lib.store.claim") in found  # from .store import claim as claim_store
    assert ("lib.cli", "lib.cli.commands") in found  # from . import commands
    assert any(e.lazy for e in EDGES)
    assert any(e.typing_only for e in EDGES)


def test_every_module_has_a_layer() -> None:
    missing = sorted(name for name in MODULES if layer_of(name) is None)
    assert not missing, f"give these modules a layer in LAYERS (and ARCHITECTURE.md): {missing}"


def test_imports_run_downwards() -> None:
    upward = []
    for edge in EDGES:
        if not edge.target.startswith("lib"):
            continue
        source, target = layer_of(edge.source), layer_of(edge.target)
        if source is not None and target is not None and target > source:
            upward.append(
                f"{_where(edge)}: {edge.source} ({LAYERS[source][0]}) imports "
                f"{edge.target} ({LAYERS[target][0]})"
            )
    assert not upward, "imports that run upwards:\n" + "\n".join(upward)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), or a self-import."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for edge in EDGES:
        if edge.target in MODULES:
            graph[edge.source].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def test_no_import_cycles() -> None:
    assert not _cycles(), f"modules importing each other in a loop: {_cycles()}"


def test_lazy_imports_are_the_listed_ones() -> None:
    lazy = {(e.source, e.target): e for e in EDGES if e.lazy and not e.typing_only}
    unlisted = [f"{_where(e)}: {s} → {t}" for (s, t), e in sorted(lazy.items()) if (s, t) not in ALLOWED_LAZY]
    assert not unlisted, (
        "imports inside functions: move them to the top, or (for a cold start) list them in "
        "ALLOWED_LAZY with the reason:\n" + "\n".join(unlisted)
    )
    silent = [_where(e) for e in EDGES if e.lazy and not e.typing_only and not _says_why(e)]
    assert not silent, (
        "say why each import inside a function is lazy (a `# lazy: ...` comment): " + ", ".join(silent)
    )
    stale = sorted(set(ALLOWED_LAZY) - set(lazy))
    assert not stale, f"ALLOWED_LAZY lists imports that are gone: {stale}"
    assert all(reason.strip() for reason in ALLOWED_LAZY.values())


def _says_why(edge: Edge) -> bool:
    """A ``# lazy: <reason>`` comment on the import's line or the line above it."""
    lines = MODULES[edge.source].read_text(encoding="utf-8").splitlines()
    near = lines[max(0, edge.line - 2) : edge.line]
    return any("# lazy:" in line.lower() for line in near)


def test_lib_never_imports_flask_or_api() -> None:
    banned = [f"{_where(e)}: {e.target}" for e in EDGES if e.target in BANNED]
    assert not banned, "lib must not import Flask or api/: " + ", ".join(banned)
