"""vercel.json, pyproject.toml and the GitHub Actions drain deploy as they are: the pinned Flask
preset with no rewrites, the function's limits, a cron every plan accepts, one list of runtime
dependencies (tests/e2e/test_vercel_build.py builds it all with the real Vercel CLI)."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from croniter import croniter
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
VERCEL_JSON = ROOT / "vercel.json"
WORKFLOW = ROOT / ".github" / "workflows" / "process-jobs.yml"

# Top-level keys of Vercel's project configuration (https://openapi.vercel.sh/vercel.json).
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
    "dashboard/index.html",
    "dashboard/app.js",
    "migrations/env.py",
    "pyproject.toml",
]
NOT_SHIPPED = [
    "tests/unit/test_vercel_config.py",
    "bench/run.py",
    ".venv/bin/python",
    ".data/sluice.db",
    ".pytest_cache/README.md",
    ".github/workflows/process-jobs.yml",
]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    data = json.loads(VERCEL_JSON.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


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


def test_only_known_top_level_keys(config: dict[str, Any]) -> None:
    assert set(config) <= KNOWN_KEYS, set(config) - KNOWN_KEYS
    assert "builds" not in config and "routes" not in config
    assert "regions" not in config and "functionFailoverRegions" not in config  # Pro's


def test_the_flask_preset_is_pinned_and_nothing_rewrites(config: dict[str, Any]) -> None:
    # Flask: one function gets every path the client asked for, and only public/ is static.
    # A rewrite would hand the app its destination as the path (every route a 404); "Other"
    # would serve the checkout, .py sources included, as static files.
    assert config["framework"] == "flask"
    assert "rewrites" not in config and "redirects" not in config
    assert not (ROOT / "public").exists()


def test_the_entrypoint_is_pinned_to_the_app(pyproject: dict[str, Any], app: Any) -> None:
    module, _, variable = pyproject["tool"]["vercel"]["entrypoint"].partition(":")
    assert (module, variable) == ("api.index", "app")
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file()
    assert app.name == "api.index"


def test_no_node_functions_hide_under_api() -> None:
    # Vercel makes every .js/.ts file under api/ a function of its own (and refuses clashing names).
    others = [p for p in (ROOT / "api").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert others == []


def test_functions_exist_and_have_sane_limits(config: dict[str, Any]) -> None:
    functions = config["functions"]
    assert set(functions) == {"api/index.py"}  # the Flask entrypoint: its options reach the function
    for pattern, options in functions.items():
        matched = [p for p in ROOT.glob(pattern) if p.is_file()]
        assert matched, f"functions pattern {pattern!r} matches no file"
        assert set(options) <= FUNCTION_KEYS, set(options) - FUNCTION_KEYS
        # Hobby runs one region at a fixed memory size: choosing either is Pro's.
        assert "memory" not in options and "regions" not in options
        duration = options["maxDuration"]
        assert type(duration) is int and 1 <= duration <= 60  # what Hobby allows without Fluid compute
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


@pytest.mark.parametrize("schedule", ["*/5 * * * *", "0 3 * * 1-5", "15,45 * * * *"])
def test_cron_check_accepts_standard_expressions(schedule: str) -> None:
    assert len(schedule.split()) == 5 and croniter.is_valid(schedule)


def at_most_daily(schedule: str) -> bool:
    """What Hobby accepts: one fixed minute of one fixed hour (a deployment with more fails)."""
    minute, hour = schedule.split()[:2]
    return minute.isdigit() and hour.isdigit()


@pytest.mark.parametrize(
    ("schedule", "daily"),
    [("0 5 * * *", True), ("30 23 * * 1-5", True), ("*/5 * * * *", False), ("0 */6 * * *", False),
     ("0 1,13 * * *", False), ("0-1 5 * * *", False)],
)  # fmt: skip
def test_the_hobby_check_tells_daily_from_more(schedule: str, daily: bool) -> None:
    assert at_most_daily(schedule) is daily
    if daily:
        runs = croniter(schedule, datetime(2026, 1, 1, tzinfo=UTC))
        first, second = runs.get_next(datetime), runs.get_next(datetime)
        assert (second - first).total_seconds() >= 86_400


def test_crons_are_valid_every_plan_accepts_them_and_they_hit_app_routes(
    config: dict[str, Any], app: Any
) -> None:
    crons = config["crons"]
    assert isinstance(crons, list) and crons
    adapter = app.url_map.bind("localhost")
    for cron in crons:
        assert set(cron) == {"path", "schedule"}
        schedule = cron["schedule"]
        assert isinstance(schedule, str) and croniter.is_valid(schedule), schedule
        assert at_most_daily(schedule), f"{schedule!r}: Hobby deployments allow daily crons only"
        path = cron["path"].split("?", 1)[0]
        assert path.startswith("/api/")
        # Vercel Cron calls with GET; it must be a real route, not a 404/405.
        adapter.match(path, method="GET")
    # No maxJobs: a cron drain is bounded by JOBS_CRON_MAX_JOBS and its budget.
    assert [c["path"] for c in crons] == ["/api/jobs/process"]


def requirement_set(lines: list[str]) -> set[str]:
    return {str(Requirement(line)) for line in lines}


def test_requirements_txt_is_the_pyproject_dependency_list(pyproject: dict[str, Any]) -> None:
    # Vercel installs [project].dependencies (pyproject.toml wins over requirements.txt there);
    # pip users install requirements.txt: both must be the same list.
    listed = [
        line.split("#", 1)[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    declared = pyproject["project"]["dependencies"]
    assert len(listed) == len(set(listed)) and len(declared) == len(set(declared))
    assert requirement_set(listed) == requirement_set(declared)
    names = {Requirement(line).name.lower() for line in declared}
    assert {"flask", "sqlalchemy", "psycopg", "pydantic", "pydantic-settings", "alembic"} <= names


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
