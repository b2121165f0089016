"""The production docker-compose.yaml: its structure, and that everything it refers to exists and agrees.

There is no Docker engine where the suite runs, so nothing here starts a container. Instead the tests read
``docker-compose.yaml`` the way Compose does (YAML merge keys, ``${VAR:-default}`` interpolation with the
values of ``.env.example``) and check what would otherwise only fail at ``docker compose up``: a missing
file or path, a renamed variable, a connection id the hook does not look up, a database the init script
never creates, a service without a health check, a ``depends_on`` on a service that does not exist.
The two init scripts are run for real: PostgreSQL's with ``psql`` against the test server, and the
``airflow-init`` job's against a temporary Airflow home and a fresh store database.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from tests.support import MIGRATIONS, REPO_ROOT

ROOT = REPO_ROOT
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
#: .env.example as shipped before the `celery` profile (commit 686391a): an .env made from it must still start
#: the default stack.
PREVIOUS_ENV_EXAMPLE = Path(__file__).with_name("previous.env.example")
DOCKERFILE = ROOT / "Dockerfile"

#: The long-running Airflow services and the Airflow sub-command each one runs.
AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
}
INIT_SERVICE = "airflow-init"
ONE_SHOT = {INIT_SERVICE, "minio-init"}
#: The services of the `celery` profile (the scale-out topology of tests/scaleout/) and the worker services.
CELERY_PROFILE = {"redis", "airflow-worker-1", "airflow-worker-2", "minio", "minio-init"}
WORKERS = ("airflow-worker-1", "airflow-worker-2")
#: The Airflow connection of the object storage (MinIO) datasets go to with the `celery` profile.
LAKE_CONN_ID = "clickstream_lake"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; `$$` is a literal `$`.
_VAR = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


# ----------------------------------------------------------------------------------------------- helpers


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path.name}: not NAME=value: {line!r}"
        values[name.strip()] = value.strip()
    return values


def _scale_out_block() -> dict[str, str]:
    """The commented ``NAME=value`` lines of ``.env.example``'s scale-out block."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.fullmatch(r"#\s*(COMPOSE_PROFILES|AIRFLOW_EXECUTOR|CLICKSTREAM_DATASET_BASE_PATH)=(\S+)\s*", line)
        if m and m.group(1) not in values:
            values[m.group(1)] = m.group(2)
    return values


def _with_real_secrets(env: dict[str, str]) -> dict[str, str]:
    """``env`` with each ``change-me`` placeholder replaced by a secret (URL-safe, at least 8 characters)."""
    return {k: f"real-secret-{k.lower().replace('_', '-')}" if "change-me" in v else v for k, v in env.items()}


def _references(text: str) -> list[tuple[str, str | None, str | None]]:
    """Every ``(name, operator, argument)`` a Compose string interpolates."""
    refs = []
    for m in _VAR.finditer(text):
        if m.group(0) == "$$":
            continue
        refs.append((m.group("name") or m.group("bare"), m.group("op"), m.group("arg")))
    return refs


def interpolate(text: str, env: dict[str, str]) -> str:
    """Substitute variables as Compose does; a required variable that is unset raises ``KeyError``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name") or m.group("bare"), m.group("op"), m.group("arg")
        value = env.get(name)
        if op in (":-", "-"):
            return value if value or (op == "-" and value is not None) else arg
        if op in (":?", "?") and not value:
            raise KeyError(f"{name} is required: {arg}")
        return value or ""

    return _VAR.sub(sub, text)


def _interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, env) for v in node]
    return node


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _dockerfile_copies() -> list[tuple[list[str], str]]:
    copies = []
    for word, rest in _dockerfile_instructions():
        if word == "COPY":
            parts = [p for p in rest.split() if not p.startswith("--")]
            copies.append((parts[:-1], parts[-1]))
    return copies


def _dockerfile_base_image() -> str:
    args = {}
    for word, rest in _dockerfile_instructions():
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        if word == "FROM":
            return interpolate(rest.split()[0], args)
    raise AssertionError("Dockerfile has no FROM")


def _run_airflow_init_until_migration(env_vars: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """docker/airflow-init.sh with ``env_vars`` and a stand-in ``airflow`` that exits 3 at ``airflow db migrate``,
    the first step after the secrets check: exit status 3 means the check let it through."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "airflow"
    fake.write_text('#!/bin/sh\necho "airflow $*"\nexit 3\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(env_vars)
    env["AIRFLOW_HOME"] = str(tmp_path)
    env["PATH"] = f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"  # `python` of this venv
    return subprocess.run(
        ["bash", str(ROOT / "docker" / "airflow-init.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """docker-compose.yaml as YAML (merge keys resolved), before variable interpolation."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return _read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def previous_env() -> dict[str, str]:
    """An ``.env`` made from the ``.env.example`` of before the `celery` profile, its secrets set."""
    return _with_real_secrets(_read_env_file(PREVIOUS_ENV_EXAMPLE))


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """The compose file as ``docker compose config`` would see it with ``.env`` = ``.env.example``."""
    return _interpolate_tree(raw, env_example)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


# ----------------------------------------------------------------------------------------------- tests


class TestServices:
    def test_the_stack_has_postgres_init_and_every_airflow_component(self, services):
        assert {"postgres", INIT_SERVICE, *AIRFLOW_SERVICES} <= set(services)

    @pytest.mark.parametrize("name, subcommand", sorted(AIRFLOW_SERVICES.items()))
    def test_each_airflow_service_runs_its_component(self, services, name, subcommand):
        assert _command(services[name]) == [subcommand]

    def test_init_job_runs_the_script_the_image_carries(self, services):
        cmd = _command(services[INIT_SERVICE])
        script = next(c for c in cmd if c.endswith(".sh"))
        destinations = {dest: srcs for srcs, dest in _dockerfile_copies()}
        assert script in destinations, f"{script} is not COPY'd by the Dockerfile ({sorted(destinations)})"
        (src,) = destinations[script]
        assert (ROOT / src).is_file()

    def test_init_job_migrates_airflow_and_the_session_store(self):
        (src,) = next(srcs for srcs, dest in _dockerfile_copies() if dest.endswith("airflow-init.sh"))
        script = (ROOT / src).read_text()
        assert "airflow db migrate" in script
        assert "ClickstreamHook" in script and ".migrate()" in script
        assert "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in script

    def test_init_job_is_one_shot(self, services):
        assert services[INIT_SERVICE].get("restart") in ("no", None, "on-failure")

    def test_executor_is_local(self, services):
        for name in AIRFLOW_SERVICES:
            assert _environment(services[name])["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


class TestCliService:
    """``airflow-cli``: one-off commands in the stack's environment, as in Airflow's own compose file."""

    def test_it_starts_only_when_named_under_the_debug_profile(self, services):
        cli = services["airflow-cli"]
        assert cli["profiles"] == ["debug"]
        assert cli.get("restart") == "no"
        assert _command(cli) == ["bash", "-c", "airflow"]
        assert "ports" not in cli and "healthcheck" not in cli

    def test_it_has_the_image_and_configuration_of_the_other_components(self, services):
        cli, scheduler = services["airflow-cli"], services["airflow-scheduler"]
        assert (cli["image"], cli["build"]) == (scheduler["image"], scheduler["build"])
        cli_env, scheduler_env = _environment(cli), _environment(scheduler)
        differing = {k for k in scheduler_env if cli_env.get(k) != scheduler_env[k]}
        assert differing <= {"AIRFLOW__CORE__TEST_CONNECTION"}
        assert cli_env["AIRFLOW__CORE__TEST_CONNECTION"] == "Enabled"  # `airflow connections test` works here
        assert cli_env["CONNECTION_CHECK_MAX_COUNT"] == "0"
        assert cli["depends_on"]["postgres"]["condition"] == "service_healthy"

    def test_the_test_button_is_off_unless_enabled_in_env(self, services, env_example):
        assert _environment(services["airflow-apiserver"])["AIRFLOW__CORE__TEST_CONNECTION"] == "Disabled"

    def test_the_store_connection_uses_the_clickstream_connection_type(self, services):
        uri = _environment(services["airflow-scheduler"])["AIRFLOW_CONN_CLICKSTREAM_DEFAULT"]
        assert uri.startswith("clickstream://")


class TestImage:
    def test_every_airflow_service_uses_the_image_built_from_the_dockerfile(self, services):
        images = set()
        for name in [INIT_SERVICE, *AIRFLOW_SERVICES]:
            svc = services[name]
            build = svc["build"]
            context = ROOT / (build["context"] if isinstance(build, dict) else build)
            dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            assert (context / dockerfile).resolve() == DOCKERFILE
            images.add(svc["image"])
        assert len(images) == 1, f"the Airflow services should share one image, got {images}"

    def test_base_image_is_airflow_3_3_2_on_the_python_the_package_requires(self):
        base = _dockerfile_base_image()
        assert re.fullmatch(r"apache/airflow:3\.3\.2-python3\.11", base), base
        assert 'requires-python = ">=3.11,<3.12"' in (ROOT / "pyproject.toml").read_text()

    def test_every_copied_path_exists(self):
        for sources, _dest in _dockerfile_copies():
            for src in sources:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"

    def test_the_package_is_installed_with_the_projects_constraints(self):
        copies = {
            dest.rstrip("/") + "/" + Path(s).name if dest.endswith("/") else dest: s
            for srcs, dest in _dockerfile_copies()
            for s in srcs
        }
        installs = [rest for word, rest in _dockerfile_instructions() if word == "RUN" and "pip install" in rest]
        assert installs, "the Dockerfile installs nothing"
        cmd = next(part for part in installs[0].split("&&") if "pip install" in part).strip()
        constraint = re.search(r"(?:--constraint|-c)\s+(\S+)", cmd)
        assert constraint, "pip install without --constraint"
        assert copies.get(constraint.group(1)) == "constraints.txt"
        # the install target is the folder holding the copied pyproject.toml, with the extras s3 and celery
        install_target = re.fullmatch(r"(.+?)/?(?:\[([\w,]+)\])?", cmd.split()[-1].strip("\"'"))
        assert install_target is not None
        target, extras = install_target.groups()
        assert {"s3", "celery"} <= set((extras or "").split(",")), f"the image lacks the s3/celery extras: {cmd}"
        assert copies.get(f"{target}/pyproject.toml") == "pyproject.toml", f"pip installs {target}"
        assert "-e " not in cmd, "production images install the package, not an editable checkout"

    def test_the_image_carries_the_dags(self):
        assert any(srcs == ["dags/"] and dest == "/opt/airflow/dags/" for srcs, dest in _dockerfile_copies())

    def test_build_context_excludes_local_state(self):
        ignored = (ROOT / ".dockerignore").read_text().split()
        assert {".venv", ".local", ".git"} <= set(ignored)


class TestPaths:
    def test_bind_mounts_exist(self, services):
        for name, svc in services.items():
            for volume in svc.get("volumes", []):
                source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
                if source.startswith((".", "/")):
                    assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"

    def test_named_volumes_are_declared(self, compose, services):
        declared = set(compose.get("volumes") or {})
        for name, svc in services.items():
            for volume in svc.get("volumes", []):
                source = volume.split(":")[0]
                if not source.startswith((".", "/")):
                    assert source in declared, f"{name} uses volume {source!r}, not declared under volumes:"

    def test_postgres_init_scripts_are_executable(self, services):
        mount = next(v for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v)
        folder = ROOT / mount.split(":")[0]
        scripts = sorted(folder.glob("*.sh")) + sorted(folder.glob("*.sql"))
        assert scripts, f"{folder} holds no init script"
        for script in folder.glob("*.sh"):
            assert script.stat().st_mode & 0o111, f"{script} is not executable"


class TestEnvironment:
    def test_every_variable_is_defaulted_or_in_env_example(self, raw, env_example):
        text = COMPOSE.read_text()
        for name, op, _arg in _references(text):
            if op in (":-", "-"):
                continue
            assert name in env_example, f"${{{name}}} is required by docker-compose.yaml but not in .env.example"

    def test_env_example_has_no_unused_variable(self, env_example):
        used = {name for name, _op, _arg in _references(COMPOSE.read_text())}
        assert set(env_example) <= used, f"unused in docker-compose.yaml: {set(env_example) - used}"

    def test_required_secrets_fail_fast_when_unset(self, raw):
        with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
            _interpolate_tree(raw, {})

    def test_airflow_services_share_configuration_and_secrets(self, services):
        shared = (
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__API__SECRET_KEY",
            "AIRFLOW__CORE__FERNET_KEY",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW_CONN_CLICKSTREAM_DEFAULT",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
            "AIRFLOW__CORE__AUTH_MANAGER",
        )
        envs = {name: _environment(services[name]) for name in [INIT_SERVICE, *AIRFLOW_SERVICES]}
        for key in shared:
            values = {name: env.get(key) for name, env in envs.items()}
            assert None not in values.values(), f"{key} missing in {[n for n, v in values.items() if v is None]}"
            assert len(set(values.values())) == 1, f"{key} differs between services: {values}"

    def test_clickstream_config_keys_are_ones_the_package_reads(self, services):
        from clickstream.store import StoreConfig

        source = "\n".join(p.read_text() for p in (ROOT / "plugins" / "clickstream").rglob("*.py"))
        read = set(re.findall(r"""conf\.get\w*\(\s*["']clickstream["']\s*,\s*["'](\w+)["']""", source))
        read |= set(StoreConfig.__dataclass_fields__)  # read by clickstream.hooks.store_config_from_airflow
        for name, svc in services.items():
            for key in _environment(svc):
                if key.startswith("AIRFLOW__CLICKSTREAM__"):
                    option = key.removeprefix("AIRFLOW__CLICKSTREAM__").lower()
                    assert option in read, f"{name} sets [clickstream] {option}, which the package never reads"

    def test_execution_api_points_at_the_api_server(self, services):
        url = _environment(services["airflow-apiserver"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
        m = re.fullmatch(r"http://([\w-]+):(\d+)/execution/", url)
        assert m and m.group(1) == "airflow-apiserver"
        assert any(p.endswith(f":{m.group(2)}") for p in services["airflow-apiserver"]["ports"])

    def test_airflow_metadata_db_is_the_postgres_service_database(self, services):
        url = make_url(_environment(services["airflow-scheduler"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        pg = _environment(services["postgres"])
        assert url.host == "postgres"
        assert (url.username, url.password, url.database) == (
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            pg["POSTGRES_DB"],
        )

    def test_init_job_gets_the_admin_user_the_auth_manager_is_configured_with(self, services):
        env = _environment(services[INIT_SERVICE])
        user, role = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(":")
        assert (user, role) == (env["AIRFLOW_ADMIN_USER"], "admin")
        assert env["AIRFLOW_ADMIN_PASSWORD"]
        auth_mount = next(v.split(":")[1] for v in services["airflow-apiserver"]["volumes"] if "auth" in v)
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].startswith(auth_mount + "/")


class TestApiServerPort:
    """The API server's port is set in one place. ``AIRFLOW_API_PORT`` moves the host side of the port
    mapping only; inside the compose network the server listens on its ``[api] port`` (Airflow's default
    unless set), and the mapping's container side, the health check and every service's Execution API URL
    name that port (issue 27 was a port changed in one place and not in the others)."""

    @pytest.fixture
    def moved(self, raw: dict[str, Any], env_example: dict[str, str]) -> dict[str, dict[str, Any]]:
        """The services with ``AIRFLOW_API_PORT=8099`` in ``.env``."""
        return _interpolate_tree(raw, {**env_example, "AIRFLOW_API_PORT": "8099"})["services"]

    @staticmethod
    def _listens_on(api: dict[str, Any]) -> tuple[str, int]:
        from airflow.configuration import conf

        env, cmd = _environment(api), _command(api)
        host = env.get("AIRFLOW__API__HOST") or conf.get_default_value("api", "host")
        port = env.get("AIRFLOW__API__PORT") or conf.get_default_value("api", "port")
        # `api-server --port N` would win over the configuration
        for flag, value in zip(cmd, cmd[1:], strict=False):
            host = value if flag in ("-H", "--host") else host
            port = value if flag in ("-p", "--port") else port
        return host, int(port)

    def test_the_host_port_is_mapped_to_the_port_the_api_server_listens_on(self, moved):
        api = moved["airflow-apiserver"]
        host, port = self._listens_on(api)
        assert host == "0.0.0.0", "the API server must listen on the container's network for the mapping"
        assert api["ports"] == [f"8099:{port}"]
        assert any(f"//localhost:{port}/" in part for part in api["healthcheck"]["test"])

    def test_every_execution_api_url_names_that_port(self, moved):
        _host, port = self._listens_on(moved["airflow-apiserver"])
        for name in (INIT_SERVICE, *AIRFLOW_SERVICES, *WORKERS):
            url = urlsplit(_environment(moved[name])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
            assert (url.hostname, url.port) == ("airflow-apiserver", port), f"{name}: {url.geturl()}"

    def test_a_base_url_if_set_names_the_host_port(self, moved):
        for name, svc in moved.items():
            base = _environment(svc).get("AIRFLOW__API__BASE_URL")  # unset: the UI's links are relative
            assert base is None or urlsplit(base).port == 8099, f"{name}: [api] base_url {base} is not port 8099"


class TestAnEnvFromBeforeTheCeleryProfile:
    """An ``.env`` made from the ``.env.example`` of before the `celery` profile (no MinIO secrets) keeps
    starting the default stack. Compose interpolates the whole file whatever the active profiles, so one
    ``${VAR:?...}`` anywhere that such an ``.env`` lacks would fail every ``docker compose up``."""

    def test_the_file_requires_only_variables_that_env_had(self, raw, previous_env):
        required = {name for name, op, _arg in _references(COMPOSE.read_text()) if op in (":?", "?")}
        assert required, "the stack's own secrets are required (${VAR:?...})"
        missing = sorted(required - set(previous_env))
        assert not missing, f"required by docker-compose.yaml but not in the previous .env.example: {missing}"
        _interpolate_tree(raw, previous_env)  # what `docker compose up` does first: raises on a missing variable

    def test_the_default_stack_runs_the_local_executor_and_a_local_dataset_folder(self, raw, previous_env):
        old = _interpolate_tree(raw, previous_env)["services"]
        for name in [INIT_SERVICE, *AIRFLOW_SERVICES]:
            env = _environment(old[name])
            assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
            assert env["AIRFLOW__CLICKSTREAM__DATASET_BASE_PATH"] == "file:///opt/airflow/datasets", name

    def test_airflow_init_passes_its_secrets_check(self, raw, previous_env, tmp_path):
        old = _interpolate_tree(raw, previous_env)["services"]
        proc = _run_airflow_init_until_migration(_environment(old[INIT_SERVICE]), tmp_path)
        assert proc.returncode == 3 and "[init] migrating" in proc.stdout, proc.stderr  # the stand-in `airflow`
        assert "error" not in proc.stderr


class TestSessionStoreConnection:
    def test_connection_env_name_is_the_hooks_default_connection(self, services):
        from clickstream.hooks import ClickstreamHook

        expected = f"AIRFLOW_CONN_{ClickstreamHook.default_conn_name.upper()}"
        lake = f"AIRFLOW_CONN_{LAKE_CONN_ID.upper()}"  # the object storage (TestCeleryProfile)
        for name in [INIT_SERVICE, *AIRFLOW_SERVICES]:
            conns = sorted(k for k in _environment(services[name]) if k.startswith("AIRFLOW_CONN_"))
            assert conns == sorted([expected, lake]), f"{name}: {conns}"

    def test_connection_uri_resolves_to_a_store_url_on_the_postgres_service(self, services, monkeypatch):
        from clickstream.hooks import ClickstreamHook

        uri = _environment(services["airflow-scheduler"])["AIRFLOW_CONN_CLICKSTREAM_DEFAULT"]
        monkeypatch.setenv("AIRFLOW_CONN_CLICKSTREAM_DEFAULT", uri)
        url = ClickstreamHook().sqlalchemy_url  # what the hook would connect to
        assert url.drivername == "postgresql+psycopg"
        assert url.host == "postgres" and url.port == 5432

    def test_store_database_is_separate_from_airflows(self, services):
        store = make_url(_environment(services["airflow-scheduler"])["AIRFLOW_CONN_CLICKSTREAM_DEFAULT"])
        meta = make_url(_environment(services["airflow-scheduler"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert store.database != meta.database
        assert store.username != meta.username

    def test_postgres_init_creates_the_database_and_role_of_the_connection(self, services):
        store = make_url(_environment(services["airflow-scheduler"])["AIRFLOW_CONN_CLICKSTREAM_DEFAULT"])
        pg_env = _environment(services["postgres"])
        mount = next(v for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v)
        script = "\n".join(p.read_text() for p in sorted((ROOT / mount.split(":")[0]).glob("*.sh")))
        # the script creates :"db" owned by :"db_user" with :'db_password', bound to these variables ...
        assert re.search(r'CREATE DATABASE :"db" OWNER :"db_user"', script)
        assert re.search(r"CREATE ROLE :\"db_user\" LOGIN PASSWORD :'db_password'", script)
        bound = dict(re.findall(r'-v (\w+)="\$(\w+)"', script))
        # ... and the postgres service passes the values the connection URI uses
        assert pg_env[bound["db"]] == store.database
        assert pg_env[bound["db_user"]] == store.username
        assert pg_env[bound["db_password"]] == store.password


class TestHealth:
    @pytest.mark.parametrize("name", ["postgres", *sorted(AIRFLOW_SERVICES)])
    def test_long_running_services_have_a_healthcheck(self, services, name):
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL")

    def test_scheduler_health_endpoint_is_enabled(self, services):
        env = _environment(services["airflow-scheduler"])
        assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"].lower() == "true"
        assert "8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])

    def test_depends_on_refers_to_defined_services_with_a_meaningful_condition(self, services):
        for name, svc in services.items():
            for dep, spec in (svc.get("depends_on") or {}).items():
                assert dep in services, f"{name} depends on undefined service {dep!r}"
                condition = spec.get("condition")
                if condition == "service_healthy":
                    assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy; it has no check"
                elif condition == "service_completed_successfully":
                    assert dep in ONE_SHOT, f"{name} waits for {dep} to complete, but it runs forever"
                else:
                    assert condition == "service_started", f"{name} -> {dep}: unknown condition {condition!r}"

    @pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
    def test_airflow_services_start_after_postgres_is_healthy_and_init_succeeded(self, services, name):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps[INIT_SERVICE]["condition"] == "service_completed_successfully"

    def test_init_waits_for_postgres(self, services):
        assert services[INIT_SERVICE]["depends_on"]["postgres"]["condition"] == "service_healthy"


class TestCeleryProfile:
    """The `celery` profile: the scale-out topology of tests/scaleout/ (Redis, two Celery workers, MinIO with
    its bucket), switched on together with the executor and the dataset location in ``.env``."""

    @pytest.fixture
    def scale_out_block(self) -> dict[str, str]:
        return _scale_out_block()

    @pytest.fixture
    def scaled_out(self, raw, env_example, scale_out_block) -> dict[str, dict[str, Any]]:
        """The services as Compose sees them once ``.env`` holds the scale-out block."""
        return _interpolate_tree(raw, {**env_example, **scale_out_block})["services"]

    def test_the_profile_holds_redis_two_workers_minio_and_its_init_and_flower_is_optional(self, services):
        assert {n for n, svc in services.items() if "celery" in (svc.get("profiles") or [])} == CELERY_PROFILE
        assert services["flower"]["profiles"] == ["flower"]
        default = {n for n, svc in services.items() if not svc.get("profiles")}
        assert default == {"postgres", INIT_SERVICE, *AIRFLOW_SERVICES}, "the default stack must not change"

    def test_env_example_switches_profile_executor_and_dataset_location_together(self, scale_out_block, services):
        assert scale_out_block["COMPOSE_PROFILES"] == "celery"
        assert scale_out_block["AIRFLOW_EXECUTOR"] == "CeleryExecutor"
        base = scale_out_block["CLICKSTREAM_DATASET_BASE_PATH"]
        m = re.fullmatch(r"s3://(\w+)@([\w.-]+)/(\S+)", base)
        assert m, base
        assert m.group(1) == LAKE_CONN_ID
        assert m.group(2) == _environment(services["minio-init"])["CLICKSTREAM_S3_BUCKET"], (
            "the bucket minio-init creates"
        )

    def test_with_the_block_every_airflow_service_runs_the_celery_executor_and_writes_to_s3(self, scaled_out):
        for name in [INIT_SERVICE, *AIRFLOW_SERVICES, *WORKERS, "flower"]:
            env = _environment(scaled_out[name])
            assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
            assert env["AIRFLOW__CLICKSTREAM__DATASET_BASE_PATH"].startswith(f"s3://{LAKE_CONN_ID}@"), name

    def test_workers_have_distinct_host_names_and_the_configuration_of_the_scheduler(self, services):
        scheduler = services["airflow-scheduler"]
        assert [services[w]["hostname"] for w in WORKERS] == list(WORKERS)
        for name in WORKERS:
            worker = services[name]
            assert (worker["image"], worker["build"]) == (scheduler["image"], scheduler["build"])
            env, scheduler_env = _environment(worker), _environment(scheduler)
            assert {k for k in scheduler_env if env.get(k) != scheduler_env[k]} == set()
            assert set(env) - set(scheduler_env) == {"DUMB_INIT_SETSID"}  # warm shutdown, as in Airflow's file
            # Celery's node name is celery@<host name>: the health check pings this worker, not any worker
            assert 'ping -d "celery@${HOSTNAME}"' in worker["healthcheck"]["test"][1]

    @pytest.mark.parametrize("executor, status", [("LocalExecutor", 1), ("CeleryExecutor", 0)])
    def test_a_worker_starts_only_under_the_celery_executor(self, services, tmp_path, executor, status):
        fake = tmp_path / "airflow"  # stands in for the image's `airflow`: records its arguments
        fake.write_text('#!/bin/sh\necho "airflow $*"\n')
        fake.chmod(0o755)
        cmd = _command(services["airflow-worker-1"])
        assert cmd[:2] == ["bash", "-c"]
        proc = subprocess.run(
            cmd,
            env={"PATH": f"{tmp_path}:{os.environ['PATH']}", "AIRFLOW__CORE__EXECUTOR": executor},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == status, proc.stderr
        if status:
            assert "AIRFLOW_EXECUTOR=CeleryExecutor" in proc.stderr and not proc.stdout
        else:
            assert proc.stdout.strip() == "airflow celery worker"

    def test_broker_is_the_redis_service_and_results_go_to_airflows_database(self, services):
        env = _environment(services["airflow-scheduler"])
        broker = make_url(env["AIRFLOW__CELERY__BROKER_URL"])
        assert (broker.drivername, broker.host, broker.port) == ("redis", "redis", 6379)
        assert "6379" in services["redis"]["expose"] and "ports" not in services["redis"], "compose network only"
        backend = env["AIRFLOW__CELERY__RESULT_BACKEND"]
        assert backend.startswith("db+")
        results, meta = make_url(backend.removeprefix("db+")), make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert (results.host, results.username, results.password, results.database) == (
            meta.host,
            meta.username,
            meta.password,
            meta.database,
        )

    def test_the_lake_connection_reaches_minio_with_the_key_minio_init_creates(self, services, monkeypatch):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        conn = _environment(services["airflow-scheduler"])[f"AIRFLOW_CONN_{LAKE_CONN_ID.upper()}"]
        monkeypatch.setenv(f"AIRFLOW_CONN_{LAKE_CONN_ID.upper()}", conn)
        hook = S3Hook(aws_conn_id=LAKE_CONN_ID)
        assert hook.conn_config.get_service_endpoint_url(service_name="s3") == "http://minio:9000"
        init = _environment(services["minio-init"])
        assert (hook.conn_config.aws_access_key_id, hook.conn_config.aws_secret_access_key) == (
            init["CLICKSTREAM_S3_ACCESS_KEY"],
            init["CLICKSTREAM_S3_SECRET_KEY"],
        )
        assert services["minio"]["command"][:3] == ["minio", "server", "/data"]  # S3 API on MinIO's default :9000
        assert _environment(services["minio"])["MINIO_ROOT_PASSWORD"] == init["MINIO_ROOT_PASSWORD"]

    def test_host_ports_of_minio_and_flower_are_bound_to_this_machine_only(self, services):
        for name in ("minio", "flower"):
            for port in services[name]["ports"]:
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"

    def test_workers_wait_for_broker_bucket_and_execution_api(self, services):
        for name in WORKERS:
            deps = services[name]["depends_on"]
            assert deps["redis"]["condition"] == "service_healthy"
            assert deps["minio-init"]["condition"] == "service_completed_successfully"
            assert deps["airflow-apiserver"]["condition"] == "service_healthy"
            assert deps[INIT_SERVICE]["condition"] == "service_completed_successfully"
        assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
        # the scheduler waits for the broker when the profile is on, and starts without it otherwise
        assert services["airflow-scheduler"]["depends_on"]["redis"] == {
            "condition": "service_healthy",
            "required": False,
        }

    @pytest.mark.parametrize(
        "password, starts",
        [(None, False), ("", False), ("short", False), ("long-enough-secret", True)],
        ids=["unset", "empty", "short", "set"],
    )
    def test_minio_starts_only_with_a_root_password(self, raw, previous_env, tmp_path, password, starts):
        env = dict(previous_env)  # an .env from before the profile: MINIO_ROOT_PASSWORD unset
        if password is not None:
            env["MINIO_ROOT_PASSWORD"] = password
        minio = _interpolate_tree(raw, env)["services"]["minio"]
        fake = tmp_path / "minio"  # stands in for the image's `minio`: records its arguments
        fake.write_text('#!/bin/sh\necho "minio $*"\n')
        fake.chmod(0o755)
        proc = subprocess.run(
            [*minio["entrypoint"], *minio["command"]],
            env={"PATH": f"{tmp_path}:{os.environ['PATH']}", **_environment(minio)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        if starts:
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.strip() == "minio server /data --console-address :9001"
        else:
            assert proc.returncode == 1 and not proc.stdout
            assert "MINIO_ROOT_PASSWORD" in proc.stderr and ".env" in proc.stderr

    @pytest.mark.parametrize("name", ["redis", "minio", *WORKERS, "flower"])
    def test_long_running_services_of_the_profiles_have_a_healthcheck(self, services, name):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")


class TestMinioInit:
    """docker/minio/create-bucket.sh, run for real with a stand-in ``mc`` that records its calls."""

    SCRIPT = ROOT / "docker" / "minio" / "create-bucket.sh"

    def _run(self, services, tmp_path, *, user_info: str = "", **overrides: str) -> tuple[int, list[str], str]:
        log = tmp_path / "mc.log"
        fake = tmp_path / "mc"
        fake.write_text(
            f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\n'
            f'if [ "$1 $2 $3" = "admin user info" ]; then echo {shlex.quote(user_info)}; fi\n'
        )
        fake.chmod(0o755)
        entrypoint = services["minio-init"]["entrypoint"]
        mount = next(v for v in services["minio-init"]["volumes"] if v.split(":")[1] == entrypoint[-1])
        assert (ROOT / mount.split(":")[0]).resolve() == self.SCRIPT
        env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", **_environment(services["minio-init"]), **overrides}
        proc = subprocess.run(["sh", str(self.SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
        calls = log.read_text().splitlines() if log.exists() else []
        return proc.returncode, calls, proc.stderr

    def test_it_refuses_the_placeholder_secrets_of_env_example(self, services, tmp_path):
        status, calls, stderr = self._run(services, tmp_path)
        assert status == 1 and "placeholder" in stderr
        assert calls == [], "it must stop before touching MinIO"

    @pytest.mark.parametrize("unset", ["MINIO_ROOT_PASSWORD", "CLICKSTREAM_S3_SECRET_KEY"])
    def test_it_refuses_a_secret_an_env_from_before_the_profile_lacks(self, raw, previous_env, tmp_path, unset):
        old = _interpolate_tree(raw, previous_env)["services"]
        secrets = {"MINIO_ROOT_PASSWORD": "root-secret-1", "CLICKSTREAM_S3_SECRET_KEY": "airflow-secret-1"}
        secrets[unset] = _environment(old["minio-init"])[unset]
        assert secrets[unset] == "", "not in that .env: empty, not a Compose error"
        status, calls, stderr = self._run(old, tmp_path, **secrets)
        assert status == 1 and f"{unset} is unset" in stderr and ".env" in stderr
        assert calls == [], "it must stop before touching MinIO"

    def test_it_creates_the_bucket_and_airflows_access_key_once(self, services, tmp_path):
        secrets = {"MINIO_ROOT_PASSWORD": "root-secret-1", "CLICKSTREAM_S3_SECRET_KEY": "airflow-secret-1"}
        init = {**_environment(services["minio-init"]), **secrets}
        status, calls, stderr = self._run(services, tmp_path, **secrets)
        assert status == 0, stderr
        key, bucket = init["CLICKSTREAM_S3_ACCESS_KEY"], init["CLICKSTREAM_S3_BUCKET"]
        assert calls == [
            f"alias set local http://minio:9000 {init['MINIO_ROOT_USER']} root-secret-1",
            f"mb --ignore-existing local/{bucket}",
            f"admin user add local {key} airflow-secret-1",
            f"admin user info local {key}",
            f"admin policy attach local readwrite --user {key}",
        ]
        (tmp_path / "mc.log").unlink()  # a second run: the policy is attached already
        status, calls, stderr = self._run(services, tmp_path, user_info="PolicyName: readwrite", **secrets)
        assert status == 0, stderr
        assert not any("policy attach" in c for c in calls) and f"mb --ignore-existing local/{bucket}" in calls


class TestInterpolation:
    """The test's own Compose interpolation, so a bug there cannot hide a broken compose file."""

    @pytest.mark.parametrize(
        "text, env, expected",
        [
            ("${A:-x}", {}, "x"),
            ("${A:-x}", {"A": ""}, "x"),
            ("${A-x}", {"A": ""}, ""),
            ("${A:-x}", {"A": "y"}, "y"),
            ("$${HOSTNAME}", {}, "${HOSTNAME}"),
            ("a${B}c", {"B": "b"}, "abc"),
        ],
    )
    def test_substitutes_like_compose(self, text, env, expected):
        assert interpolate(text, env) == expected

    def test_required_variable_raises(self):
        with pytest.raises(KeyError, match="A is required"):
            interpolate("${A:?set A}", {})


class TestInitScripts:
    """The two init scripts, run for real: PostgreSQL's (with psql) and the airflow-init job's."""

    SCRIPTS = (ROOT / "docker" / "postgres" / "init-clickstream-db.sh", ROOT / "docker" / "airflow-init.sh")

    @pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
    def test_script_is_valid_bash(self, script):
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr

    def test_postgres_init_creates_a_store_the_hook_can_migrate_as_its_own_role(self, pg_server, monkeypatch):
        from clickstream.hooks import ClickstreamHook
        from tests.support.pgcluster import find_pg_bin

        admin = make_url(pg_server.admin_url)
        suffix = uuid.uuid4().hex[:8]
        db, user, password = f"cs_store_{suffix}", f"cs_role_{suffix}", f"pw-{suffix}"
        assert admin.host is not None and admin.username is not None and admin.database is not None
        env = {
            **os.environ,
            "PATH": f"{find_pg_bin()}:{os.environ['PATH']}",
            "PGHOST": admin.host,
            "PGPORT": str(admin.port),
            "PGPASSWORD": admin.password or "",
            "POSTGRES_USER": admin.username,
            "POSTGRES_DB": admin.database,
            "CLICKSTREAM_DB_NAME": db,
            "CLICKSTREAM_DB_USER": user,
            "CLICKSTREAM_DB_PASSWORD": password,
        }
        try:
            proc = subprocess.run(["bash", str(self.SCRIPTS[0])], env=env, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
            store_url = admin.set(username=user, password=password, database=db)
            monkeypatch.setenv(
                "AIRFLOW_CONN_CLICKSTREAM_DEFAULT",
                store_url.set(drivername="postgresql").render_as_string(hide_password=False),
            )
            with ClickstreamHook() as hook:
                assert hook.migrate() == MIGRATIONS
                with hook.store.engine.connect() as conn:
                    owner, me = conn.execute(
                        sa.text("SELECT pg_get_userbyid(datdba), current_user FROM pg_database WHERE datname = :db"),
                        {"db": db},
                    ).one()
            assert owner == me == user
        finally:
            pg_server.drop_database(db)
            engine = sa.create_engine(pg_server.admin_url)
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{user}"'))
            engine.dispose()

    def test_airflow_init_job_refuses_the_placeholder_secrets_of_env_example(self, services, tmp_path):
        proc = _run_airflow_init_until_migration(_environment(services[INIT_SERVICE]), tmp_path)
        assert proc.returncode == 1
        assert "placeholder" in proc.stderr and "AIRFLOW__CORE__FERNET_KEY" in proc.stderr
        # the LocalExecutor and a file:// base path never use MinIO: its placeholder does not matter
        assert "AIRFLOW_CONN_CLICKSTREAM_LAKE" not in proc.stderr
        assert "migrating" not in proc.stdout, "it must stop before touching any database"

    @pytest.mark.parametrize(
        "settings, s3_secret, refused",
        [
            ({}, "", None),  # no MinIO: nothing to check
            ({}, "change-me-s3-secret", None),
            (_scale_out_block(), "", "has no secret"),
            (_scale_out_block(), "change-me-s3-secret", "placeholder"),
            (_scale_out_block(), "a-real-s3-secret", None),
            ({"AIRFLOW_EXECUTOR": "CeleryExecutor"}, "", "has no secret"),
            ({"CLICKSTREAM_DATASET_BASE_PATH": "s3://clickstream_lake@b/datasets"}, "", "has no secret"),
            ({"CLICKSTREAM_DATASET_BASE_PATH": "s3://clickstream_lake@b/datasets"}, "change-me-x", "placeholder"),
        ],
        ids=[
            "local",
            "local-placeholder",
            "celery-unset",
            "celery-placeholder",
            "celery-set",
            "executor-unset",
            "lake-path-unset",
            "lake-path-placeholder",
        ],
    )
    def test_airflow_init_job_checks_the_object_storage_secret_only_when_the_stack_uses_it(
        self, raw, previous_env, tmp_path, settings, s3_secret, refused
    ):
        env = {**previous_env, **settings, "CLICKSTREAM_S3_SECRET_KEY": s3_secret}
        init = _environment(_interpolate_tree(raw, env)["services"][INIT_SERVICE])
        proc = _run_airflow_init_until_migration(init, tmp_path)
        if refused:
            assert proc.returncode == 1 and refused in proc.stderr, proc.stderr
            assert "AIRFLOW_CONN_CLICKSTREAM_LAKE" in proc.stderr
            if refused == "has no secret":
                assert "CLICKSTREAM_S3_SECRET_KEY" in proc.stderr  # what to set in .env
            assert "migrating" not in proc.stdout, "it must stop before touching any database"
        else:
            assert proc.returncode == 3 and "[init] migrating" in proc.stdout, proc.stderr  # the stand-in `airflow`

    @pytest.mark.slow
    def test_airflow_init_job_migrates_both_databases_and_sets_the_admin_password(self, pg_url, tmp_path):
        home = tmp_path / "airflow"
        passwords = tmp_path / "auth" / "passwords.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # `airflow` and `python` of this venv
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW_CONN_CLICKSTREAM_DEFAULT": make_url(pg_url)
                .set(drivername="postgresql")
                .render_as_string(hide_password=False),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW_ADMIN_USER": "admin",
                "AIRFLOW_ADMIN_PASSWORD": "s3cret",
            }
        )
        for attempt in (1, 2):  # the second run finds everything done and still succeeds
            proc = subprocess.run(
                ["bash", str(self.SCRIPTS[1])],
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
                stdin=subprocess.DEVNULL,
            )
            assert proc.returncode == 0, f"run {attempt}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert f"applied {MIGRATIONS}" in proc.stdout or "up to date" in proc.stdout
        assert json.loads(passwords.read_text()) == {"admin": "s3cret"}
        assert passwords.stat().st_mode & 0o077 == 0, "the passwords file must be private"
        meta = sa.create_engine(f"sqlite:///{home}/airflow.db")
        store = sa.create_engine(pg_url)
        try:
            assert {"dag", "dag_run", "alembic_version"} <= set(sa.inspect(meta).get_table_names())
            with store.connect() as conn:
                assert conn.execute(sa.text("SELECT version FROM cs_schema_migrations")).scalars().all() == MIGRATIONS
        finally:
            meta.dispose()
            store.dispose()
