"""The repository as committed deploys on Vercel: the real CLI (vercel@60.1.3 from npm) builds a
clean copy of the tracked files offline, then the built function runs behind the bridge module
Vercel itself calls (``vc__handler__python.vc_handler``), each request routed as the build's
``.vercel/output/config.json`` says. Every request must reach the app with the client's own path.

Tools come from the registries by name and are cached between runs: the CLI in
``~/.cache/sluice/vercel-60.1.3`` (npm), ``uv`` from requirements-dev.txt, and a Python 3.12 (the
runtime Vercel picks for this project) from PATH or pyenv. Locally a missing tool skips; with
CI=true it fails.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from tests.support.db import IN_CI

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
VERCEL_VERSION = "60.1.3"
CACHE = Path(os.environ.get("SLUICE_TOOLS_CACHE") or Path.home() / ".cache" / "sluice")
BUNDLE_LIMIT_MB = 120
HOST = "sluice-e2e-abc123.vercel.app"
ADMIN_KEY = "admin-key-vercel-e2e"
CRON_SECRET = "cron-secret-vercel-e2e"
RESULT = "\x1esluice-result "


def missing(what: str) -> Any:
    """A tool the test needs is absent: fail under CI=true, skip on a laptop."""
    if IN_CI:
        pytest.fail(f"{what} (required in CI)")
    pytest.skip(what)


# -- tools -------------------------------------------------------------------------------------


def vercel_cli() -> Path:
    """``vercel`` at VERCEL_VERSION, installed once with npm into the cache (atomically)."""
    home = CACHE / f"vercel-{VERCEL_VERSION}"
    binary = home / "node_modules" / ".bin" / "vercel"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        missing("npm and node are needed to install the Vercel CLI")
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = CACHE / f".vercel-{VERCEL_VERSION}-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--loglevel=error",
         f"vercel@{VERCEL_VERSION}"],
        check=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        staging.rename(home)
    except OSError:  # another run installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return binary


def python_312() -> Path:
    """A CPython 3.12's real executable: from PATH (a pyenv shim may refuse), else from pyenv."""
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates = [shutil.which("python3.12"), *sorted(pyenv_root.glob("versions/3.12*/bin/python3.12"))]
    probe = "import sys; print(sys.executable if sys.version_info[:2] == (3, 12) else '')"
    for candidate in filter(None, candidates):
        run = subprocess.run(
            [str(candidate), "-c", probe], check=False, capture_output=True, text=True, timeout=60
        )
        if run.returncode == 0 and run.stdout.strip():
            return Path(run.stdout.strip())
    return missing("Python 3.12 (Vercel's Python runtime for this project) is not installed")


def uv_binary() -> Path:
    """uv (requirements-dev.txt puts it beside this interpreter), which Vercel's builder runs."""
    found = shutil.which("uv", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if found is None:
        missing("uv is not installed (pip install -r requirements-dev.txt)")
    return Path(str(found))


def tool_env(*dirs: Path) -> dict[str, str]:
    """This environment, less anything of Sluice's or Vercel's own, with ``dirs`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VERCEL", "JOBS_", "DATABASE_"))}
    env["PATH"] = os.pathsep.join([*(str(d) for d in dirs), env.get("PATH", "")])
    env["VERCEL_TELEMETRY_DISABLED"] = "1"
    return env


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, timeout=60
    ).stdout
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


# -- the build ---------------------------------------------------------------------------------


@dataclass
class Build:
    project: Path  # the clean copy that was built
    output: Path  # its .vercel/output
    config: dict[str, Any]
    python: Path
    log: str


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    cli, python, uv = vercel_cli(), python_312(), uv_binary()
    project = tmp_path_factory.mktemp("vercel") / "sluice"
    for name in tracked_files():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, project / name)
    # What `vercel link` writes; no login is needed to build. The dashboard's preset says "Other":
    # vercel.json's pinned framework must win.
    settings = {"projectId": "prj_sluice_e2e", "orgId": "team_sluice_e2e", "settings": {"framework": None}}
    (project / ".vercel").mkdir()
    (project / ".vercel" / "project.json").write_text(json.dumps(settings))
    env = tool_env(python.parent, uv.parent, Path(shutil.which("node") or "/usr/bin/node").parent)
    run = subprocess.run(
        [str(cli), "build", "--yes"], check=False, cwd=project, env=env, capture_output=True, text=True,
        timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    log = run.stdout + run.stderr
    assert run.returncode == 0, f"vercel build failed:\n{log[-4000:]}"
    assert "Using Python 3.12" in log, log[-4000:]
    output = project / ".vercel" / "output"
    config = json.loads((output / "config.json").read_text())
    return Build(project, output, config, python, log)


# -- Vercel's routing, as config.json describes it ----------------------------------------------

ROUTE_KEYS = {"src", "dest", "check", "continue", "status", "headers", "transforms"}
PHASES_AFTER_FILESYSTEM = ("filesystem", "rewrite")


@dataclass
class Routed:
    kind: str  # "function", "static" or "status"
    target: str  # function or static file name ("" for a status)
    path: str  # the path the function is called with (a request.path transform applies)
    status: int = 200


def phases(routes: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    grouped: dict[str | None, list[dict[str, Any]]] = {None: []}
    current: str | None = None
    for route in routes:
        if "handle" in route:
            current = route["handle"]
            grouped.setdefault(current, [])
            continue
        unknown = set(route) - ROUTE_KEYS
        assert not unknown, f"this test's router does not model {unknown} (route {route})"
        grouped[current].append(route)
    return grouped


def substitute(template: str, match: re.Match[str]) -> str:
    def group(m: re.Match[str]) -> str:
        key = m.group(1)
        return match.group(int(key) if key.isdigit() else key) or ""

    return re.sub(r"\$(\d+|[A-Za-z_]\w*)", group, template)


def route(build: Build, path: str) -> Routed:
    """Vercel's phases: the routes before any handle, the filesystem check, the `filesystem` and
    `rewrite` phases (each followed by a check), else the `error` phase's 404."""

    def exists(p: str) -> Routed | None:
        name = p.strip("/")
        if (build.output / "functions" / f"{name}.func").is_dir():
            return Routed("function", name, called_with)
        static = build.output / "static" / (name or "index.html")
        if static.is_file():
            return Routed("static", str(static.relative_to(build.output / "static")), called_with)
        return None

    grouped = phases(build.config.get("routes", []))
    current, called_with = path, path
    for phase in (None, *PHASES_AFTER_FILESYSTEM):
        for rule in grouped.get(phase, []):
            match = re.fullmatch(rule["src"].removeprefix("^").removesuffix("$"), current)
            if match is None:
                continue
            if "status" in rule and "dest" not in rule:
                return Routed("status", "", current, rule["status"])
            for transform in rule.get("transforms", []):
                assert (transform["type"], transform["op"]) == ("request.path", "set"), transform
                called_with = substitute(transform["args"], match)
            current = substitute(rule.get("dest", current), match)
            if rule.get("continue"):
                continue
            if rule.get("check") and (found := exists(current)) is not None:
                return found
            break
        if (found := exists(current)) is not None:
            return found
    return Routed("status", "", current, 404)


# -- the function, through Vercel's bridge -------------------------------------------------------


@dataclass
class Function:
    """The built function laid out as Vercel uploads it, run by a bare Python of its runtime."""

    root: Path
    vc_config: dict[str, Any]
    process: subprocess.Popen[str] | None = None
    stderr: list[str] = field(default_factory=list)

    def call(self, event: dict[str, Any]) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(event) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(RESULT):
                result: dict[str, Any] = json.loads(line[len(RESULT) :])
                return result
        raise AssertionError(f"the function exited ({self.process.wait()}); see stderr above")


def materialize(build: Build, name: str, into: Path) -> Function:
    """Copy the function's files: those in its .func directory and its ``filePathMap``."""
    func = build.output / "functions" / f"{name}.func"
    shutil.copytree(func, into, symlinks=False)
    vc_config = json.loads((func / ".vc-config.json").read_text())
    for target, source in vc_config.get("filePathMap", {}).items():
        (into / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build.project / source, into / target)
    return Function(into, vc_config)


DRIVER = f"""
import importlib, json, sys
module, _, name = {{handler!r}}.rpartition(".")
handler = getattr(importlib.import_module(module), name)
for line in sys.stdin:
    result = handler(json.loads(line), None)
    sys.stdout.write({RESULT!r} + json.dumps(result) + "\\n")
    sys.stdout.flush()
"""


@pytest.fixture(scope="module")
def function(build: Build, tmp_path_factory: pytest.TempPathFactory) -> Function:
    functions = build.output / "functions"
    names = [p.relative_to(functions).as_posix().removesuffix(".func") for p in functions.rglob("*.func")]
    assert len(names) == 1, f"one function expected, the build made {names}"
    return materialize(build, names[0], tmp_path_factory.mktemp("lambda") / "task")


@pytest.fixture(scope="module")
def runtime(build: Build, function: Function, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare virtual environment of the function's runtime: only the bundle provides packages."""
    assert function.vc_config["runtime"] == "python3.12"
    home = tmp_path_factory.mktemp("runtime")
    subprocess.run([str(build.python), "-m", "venv", "--without-pip", str(home)], check=True, timeout=120)
    return home / "bin" / "python"


@pytest.fixture
def running(function: Function, runtime: Path, db_url: str, tmp_path: Path) -> Iterator[Function]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "LAMBDA_TASK_ROOT": str(function.root),
        **function.vc_config.get("environment", {}),
        # The project's settings, as set in Vercel's dashboard, and Vercel's own system variables.
        "DATABASE_URL": db_url,
        "JOBS_API_KEYS": ADMIN_KEY,
        "CRON_SECRET": CRON_SECRET,
        "VERCEL": "1",
        "VERCEL_ENV": "production",
        "VERCEL_URL": HOST,
    }
    handler = function.vc_config["handler"]
    stderr = (tmp_path / "stderr.log").open("w")
    function.process = subprocess.Popen(
        [str(runtime), "-c", DRIVER.format(handler=handler)], cwd=function.root, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip
    try:
        yield function
    finally:
        assert function.process.stdin is not None and function.process.stdout is not None
        function.process.stdin.close()
        function.process.wait(timeout=30)
        function.process.stdout.close()
        stderr.close()
        function.process = None
        log = (tmp_path / "stderr.log").read_text()
        assert "Traceback" not in log, log[-4000:]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    build: Build,
    fn: Function,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> Answer:
    """What Vercel's proxy does with one client request: route it, then invoke the function."""
    path, _, query = target.partition("?")
    routed = route(build, path)
    assert routed.kind == "function", f"{target} → {routed}"
    # The app must be called with the client's own path, never a rewrite's destination.
    assert routed.path == path, f"{target} reached the app as {routed.path}"
    data = b"" if body is None else json.dumps(body).encode()
    payload = {
        "method": method,
        "path": routed.path + (f"?{query}" if query else ""),
        "headers": {
            "host": HOST,
            "x-forwarded-host": HOST,
            "x-forwarded-proto": "https",
            "x-forwarded-for": "203.0.113.7",
            "x-real-ip": "203.0.113.7",
            "x-vercel-deployment-url": HOST,
            **({"content-type": "application/json"} if body is not None else {}),
            **(headers or {}),
        },
        "body": base64.b64encode(data).decode(),
        "encoding": "base64",
    }
    result = fn.call({"body": json.dumps(payload)})
    raw = result.get("body", "")
    content = base64.b64decode(raw) if result.get("encoding") == "base64" else raw.encode()
    flat = {k.lower(): v[0] if isinstance(v, list) else v for k, v in result["headers"].items()}
    return Answer(result["statusCode"], flat, content)


# -- tests -------------------------------------------------------------------------------------


def test_the_build_pins_flask_and_serves_no_source_file(build: Build) -> None:
    builds = json.loads((build.output / "builds.json").read_text())
    python_builds = [b for b in builds["builds"] if b["use"] == "@vercel/python"]
    assert [b["config"].get("framework") for b in python_builds] == ["flask"]
    static = build.output / "static"
    served = [p.relative_to(static).as_posix() for p in static.rglob("*") if p.is_file()]
    assert served == [], f"files served as they are: {served[:20]}"
    for path in ("/lib/config.py", "/api/index.py", "/pyproject.toml", "/.env"):
        routed = route(build, path)
        assert routed.kind == "function" and routed.path == path, (path, routed)


def test_the_bundle_holds_the_dependencies_and_stays_small(
    build: Build, function: Function, capsys: pytest.CaptureFixture[str]
) -> None:
    vendor = function.root / "_vendor"
    installed = {p.name.split("-")[0].lower().replace("_", "-") for p in vendor.glob("*.dist-info")}
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {Requirement(d).name.lower().replace("_", "-") for d in declared}
    assert wanted <= installed, f"not in the bundle: {wanted - installed}"
    for shipped in ("api/index.py", "lib/drain.py", "dashboard/app.js", "migrations/env.py"):
        assert (function.root / shipped).is_file(), shipped
    for left_out in ("tests", "bench", ".github", ".ci"):
        assert not (function.root / left_out).exists(), left_out
    size = sum(p.stat().st_size for p in function.root.rglob("*") if p.is_file() and not p.is_symlink())
    with capsys.disabled():
        print(f"\nVercel function bundle: {size / 1e6:.1f} MB unzipped", end=" ")
        print(f"(Vercel's limit 250 MB, ours {BUNDLE_LIMIT_MB} MB)")
    assert size < BUNDLE_LIMIT_MB * 1_000_000


def test_every_route_reaches_the_app_with_its_own_path(build: Build, running: Function) -> None:
    def call(method: str, target: str, **kw: Any) -> Answer:
        return request(build, running, method, target, **kw)

    admin = {"x-api-key": ADMIN_KEY}
    index = (ROOT / "dashboard" / "index.html").read_bytes()
    for page in ("/", "/dashboard"):
        answer = call("GET", page)
        assert (answer.status, answer.body) == (200, index), page
        assert answer.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in answer.headers["content-security-policy"]
    for asset, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        answer = call("GET", f"/dashboard/{asset}")
        assert (answer.status, answer.body) == (200, (ROOT / "dashboard" / asset).read_bytes())
        assert answer.headers["content-type"].startswith(kind)

    health = call("GET", "/api/health")
    assert (health.status, health.json()) == (200, {"status": "ok"})

    created = call("POST", "/api/jobs", headers=admin, body={"type": "noop", "payload": {"n": 0}})
    assert created.status == 201, created.body
    job_id = created.json()["id"]
    assert created.headers["location"].endswith(f"/api/jobs/{job_id}")
    batch = call("POST", "/api/jobs/batch", headers=admin, body={"jobs": [{"type": "noop"}] * 11})
    assert batch.status == 201 and len(batch.json()["jobs"]) == 11

    got = call("GET", f"/api/jobs/{job_id}", headers=admin)
    assert (got.status, got.json()["id"], got.json()["status"]) == (200, job_id, "pending")
    listed = call("GET", "/api/jobs?status=pending&limit=50", headers=admin)
    assert listed.status == 200 and job_id in [j["id"] for j in listed.json()["jobs"]]
    status = call("GET", "/api/jobs/status", headers=admin)
    assert (status.status, status.json()["counts"]["pending"]) == (200, 12)

    # Vercel Cron: a GET of each cron path with the project's CRON_SECRET. No maxJobs: the drain
    # takes up to JOBS_CRON_MAX_JOBS, not the API's default of 10.
    crons = build.config["crons"]
    assert [c["path"] for c in crons] == ["/api/jobs/process"]
    tick = call(
        "GET", crons[0]["path"],
        headers={"authorization": f"Bearer {CRON_SECRET}", "user-agent": "vercel-cron/1.0"},
    )  # fmt: skip
    assert tick.status == 200, tick.body
    assert (tick.json()["processed"], tick.json()["succeeded"], tick.json()["remaining"]) == (12, 12, 0)
    done = call("GET", f"/api/jobs/{job_id}", headers=admin).json()
    assert (done["status"], done["attempts"]) == ("completed", 1)
    last = call("GET", "/api/jobs/status", headers=admin).json()["lastDrain"]
    assert (last["source"], last["processed"]) == ("cron", 12)

    unknown = call("GET", "/api/jobs/no-such-job", headers=admin)
    assert (unknown.status, unknown.json()["error"]["code"]) == (404, "not_found")
    for source in ("/lib/config.py", "/api/index.py", "/pyproject.toml"):
        answer = call("GET", source)
        assert (answer.status, answer.json()["error"]["code"]) == (404, "not_found"), source
