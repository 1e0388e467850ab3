"""vercel.json and the GitHub Actions drain deploy as they are: known keys, existing function
files, sane limits, valid cron expressions, and every cron path is a route of the app."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from croniter import croniter

ROOT = Path(__file__).resolve().parents[2]
VERCEL_JSON = ROOT / "vercel.json"
WORKFLOW = ROOT / ".github" / "workflows" / "process-jobs.yml"

# Top-level keys of Vercel's project configuration (https://openapi.vercel.sh/vercel.json).
# The legacy `builds`/`routes` are left out on purpose: they conflict with `functions`/`rewrites`.
KNOWN_KEYS = {
    "$schema",
    "buildCommand",
    "bunVersion",
    "cleanUrls",
    "crons",
    "devCommand",
    "fluid",
    "framework",
    "functions",
    "git",
    "github",
    "headers",
    "ignoreCommand",
    "images",
    "installCommand",
    "outputDirectory",
    "public",
    "redirects",
    "regions",
    "functionFailoverRegions",
    "rewrites",
    "trailingSlash",
}
FUNCTION_KEYS = {"memory", "maxDuration", "runtime", "includeFiles", "excludeFiles", "regions"}
# What the app needs at run time must never be excluded from the bundle.
RUNTIME_FILES = [
    "api/index.py",
    "api/_jobs.py",
    "lib/__init__.py",
    "lib/handlers/http.py",
    "requirements.txt",
]
NOT_SHIPPED = ["tests/unit/test_vercel_config.py", "bench/run.py", ".venv/bin/python", ".data/sluice.db"]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    data = json.loads(VERCEL_JSON.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def app() -> Any:
    from api.index import app

    return app


def brace_globs(pattern: str) -> list[str]:
    """``{a/**,b/**}`` → ``["a/**", "b/**"]`` (one level of braces, as Vercel's globs use)."""
    match = re.fullmatch(r"\{(.*)\}", pattern)
    return match.group(1).split(",") if match else [pattern]


def excluded(path: str, pattern: str) -> bool:
    return any(
        fnmatch.fnmatch(path, glob) or path.startswith(glob.rstrip("*")) for glob in brace_globs(pattern)
    )


def rewrite_destination(config: dict[str, Any], path: str) -> str | None:
    """Where Vercel sends ``path``: the first rewrite whose source matches, else the path itself."""
    for rule in config.get("rewrites", []):
        if re.fullmatch(rule["source"], path):
            return str(rule["destination"])
    return None


def function_file(destination: str) -> Path:
    """``/api/index`` → ``api/index.py`` (Vercel drops the extension of Python functions)."""
    return ROOT / (destination.lstrip("/") + ".py")


def test_only_known_top_level_keys(config: dict[str, Any]) -> None:
    assert set(config) <= KNOWN_KEYS, set(config) - KNOWN_KEYS
    assert "builds" not in config and "routes" not in config


def test_functions_exist_and_have_sane_limits(config: dict[str, Any]) -> None:
    functions = config["functions"]
    assert isinstance(functions, dict) and functions
    assert "api/index.py" in functions
    for pattern, options in functions.items():
        matched = [p for p in ROOT.glob(pattern) if p.is_file()]
        assert matched, f"functions pattern {pattern!r} matches no file"
        assert all(p.name.endswith(".py") and not p.name.startswith("_") for p in matched)
        assert set(options) <= FUNCTION_KEYS, set(options) - FUNCTION_KEYS
        duration = options["maxDuration"]
        assert type(duration) is int and 1 <= duration <= 800
        for key in ("includeFiles", "excludeFiles"):
            assert isinstance(options.get(key, ""), str)


def test_exclude_files_drop_tests_but_keep_the_app(config: dict[str, Any]) -> None:
    pattern = config["functions"]["api/index.py"]["excludeFiles"]
    for path in NOT_SHIPPED:
        assert excluded(path, pattern), path
    for path in RUNTIME_FILES:
        assert (ROOT / path).exists(), path
        assert not excluded(path, pattern), path


def test_function_duration_leaves_room_for_the_drain_budget(config: dict[str, Any]) -> None:
    from lib.config import Settings

    budget_s = Settings.model_fields["jobs_drain_budget_ms"].default / 1000
    assert config["functions"]["api/index.py"]["maxDuration"] >= budget_s + 10


def test_rewrites_are_well_formed_and_reach_the_app(config: dict[str, Any]) -> None:
    rewrites = config["rewrites"]
    assert isinstance(rewrites, list) and rewrites
    for rule in rewrites:
        assert set(rule) <= {"source", "destination", "has", "missing"}
        assert rule["source"].startswith("/") and rule["destination"].startswith("/")
        re.compile(rule["source"])
        assert function_file(rule["destination"]).is_file(), rule["destination"]
    paths = (
        "/",
        "/dashboard",
        "/dashboard/app.js",
        "/api/jobs",
        "/api/jobs/process",
        "/api/health",
        "/api/x/",
    )
    for path in (*paths, "/api/jobs/abc/cancel"):
        assert rewrite_destination(config, path) == "/api/index", path


@pytest.mark.parametrize("schedule", ["*/5 * * * *", "0 3 * * 1-5", "15,45 * * * *"])
def test_cron_check_accepts_standard_expressions(schedule: str) -> None:
    assert len(schedule.split()) == 5 and croniter.is_valid(schedule)


def test_crons_are_valid_and_hit_app_routes(config: dict[str, Any], app: Any) -> None:
    crons = config["crons"]
    assert isinstance(crons, list) and crons
    adapter = app.url_map.bind("localhost")
    for cron in crons:
        assert set(cron) == {"path", "schedule"}
        schedule = cron["schedule"]
        assert isinstance(schedule, str) and len(schedule.split()) == 5, schedule
        assert croniter.is_valid(schedule), schedule
        croniter(schedule).get_next(float)
        path = cron["path"].split("?", 1)[0]
        assert path.startswith("/api/")
        assert rewrite_destination(config, path) == "/api/index"
        # Vercel Cron calls with GET; it must be a real route, not a 404/405.
        adapter.match(path, method="GET")
    assert {"path": "/api/jobs/process", "schedule": "*/5 * * * *"} in crons


def test_github_workflow_drains_with_the_api_key() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "workflow_dispatch" in triggers
    [schedule] = triggers["schedule"]
    assert croniter.is_valid(schedule["cron"]) and len(schedule["cron"].split()) == 5
    [job] = doc["jobs"].values()
    script = "\n".join(step.get("run", "") for step in job["steps"])
    env = {k: v for step in job["steps"] for k, v in step.get("env", {}).items()}
    assert "--fail-with-body" in script and "--max-time 60" in script
    assert "-X POST" in script and "/api/jobs/process" in script
    assert '-H "x-api-key: ${JOBS_API_KEY}"' in script
    assert env["JOBS_API_KEY"] == "${{ secrets.JOBS_API_KEY }}"
    # Untrusted input reaches the script through env only, never through ${{ }} in `run`.
    assert "${{" not in script
