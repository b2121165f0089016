"""The addresses of ``./dev standalone`` (:mod:`clickstream.demo.urls`): the Execution API's URL follows the
host and port the API server listens on, and what cannot be served is refused naming what to set (issue 27).

The end-to-end proof, a DAG run on another port, is ``test_standalone_port.py`` (slow); these are quick.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clickstream.demo.urls import UrlConflict, check_port_free, shell_lines, standalone_urls
from tests.support import REPO_ROOT
from tests.support.connections import free_port

#: host name -> addresses, instead of DNS.
HOSTS = {
    "localhost": {"127.0.0.1", "::1"},
    "127.0.0.1": {"127.0.0.1"},
    "::1": {"::1"},
    "0.0.0.0": {"0.0.0.0"},
    "devbox": {"192.168.1.20"},
    "192.168.1.20": {"192.168.1.20"},
}


def urls(**kwargs):
    settings: dict[str, Any] = {"host": None, "port": None, "base_url": None, "execution_api_url": None}
    settings.update(kwargs)
    return standalone_urls(resolver=lambda host: HOSTS.get(host, set()), **settings)


class TestDerived:
    def test_defaults_are_loopback_and_8080(self):
        u = urls()
        assert (u.host, u.port) == ("127.0.0.1", 8080)
        assert u.execution_api == "http://127.0.0.1:8080/execution/"
        assert (u.local, u.public) == ("http://127.0.0.1:8080", "http://localhost:8080")

    def test_the_execution_api_follows_the_port(self):
        u = urls(port="8099")
        assert u.port == 8099
        assert u.execution_api == "http://127.0.0.1:8099/execution/"
        assert u.public == "http://localhost:8099"

    @pytest.mark.parametrize(
        ("host", "execution_api", "public"),
        [
            ("0.0.0.0", "http://127.0.0.1:8099/execution/", "http://localhost:8099"),
            ("localhost", "http://localhost:8099/execution/", "http://localhost:8099"),
            ("::1", "http://[::1]:8099/execution/", "http://localhost:8099"),
            ("192.168.1.20", "http://192.168.1.20:8099/execution/", "http://192.168.1.20:8099"),
        ],
    )
    def test_the_execution_api_follows_the_host(self, host, execution_api, public):
        u = urls(host=host, port="8099")
        assert (u.execution_api, u.public) == (execution_api, public)

    def test_a_base_url_on_the_same_port_keeps_its_path_for_the_execution_api(self):
        u = urls(port="8099", base_url="http://localhost:8099/airflow/")
        assert u.execution_api == "http://127.0.0.1:8099/airflow/execution/"
        assert (u.local, u.public) == ("http://127.0.0.1:8099/airflow", "http://localhost:8099/airflow")

    def test_a_base_url_that_is_a_path_only_is_a_path_on_the_api_servers_address(self):
        u = urls(port="8099", base_url="/airflow/")
        assert u.execution_api == "http://127.0.0.1:8099/airflow/execution/"
        assert (u.local, u.public) == ("http://127.0.0.1:8099/airflow", "http://localhost:8099/airflow")

    def test_without_a_port_the_port_of_the_base_url_is_used(self):
        u = urls(base_url="http://localhost:8077")
        assert u.port == 8077
        assert u.execution_api == "http://127.0.0.1:8077/execution/"

    def test_https_when_the_api_server_has_a_certificate(self):
        u = urls(port="8443", base_url="https://localhost:8443/", ssl=True)
        assert u.execution_api == "https://127.0.0.1:8443/execution/"

    def test_a_base_url_naming_another_name_of_a_machine_listening_everywhere_is_served(self):
        assert urls(host="0.0.0.0", port="8099", base_url="http://devbox:8099").public == "http://devbox:8099"

    def test_an_execution_api_url_that_reaches_the_api_server_is_kept(self):
        u = urls(port="8099", execution_api_url="http://localhost:8099/execution/")
        assert u.execution_api == "http://localhost:8099/execution/"

    def test_shell_lines_export_airflows_settings_and_set_the_banner_urls(self):
        lines = shell_lines(urls(port="8099", base_url="http://localhost:8099/a b/"))
        script = "\n".join(lines) + '\nprintf "%s\\n" "$AIRFLOW__CORE__EXECUTION_API_SERVER_URL" "$standalone_url"'
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
        assert out.splitlines() == ["http://127.0.0.1:8099/a b/execution/", "http://localhost:8099/a b"]


class TestRefused:
    def test_a_base_url_on_another_port_names_both_settings(self):
        with pytest.raises(UrlConflict) as err:
            urls(port="8099", base_url="http://localhost:8080/airflow/")
        message = str(err.value)
        assert "AIRFLOW__API__BASE_URL=http://localhost:8099/airflow/" in message
        assert "AIRFLOW__API__PORT" in message and "8080" in message

    def test_a_base_url_on_a_host_the_api_server_does_not_listen_on(self):
        with pytest.raises(UrlConflict, match=r"listens on 127\.0\.0\.1 only \(AIRFLOW__API__HOST\)"):
            urls(port="8099", base_url="http://devbox:8099/")

    def test_a_base_url_whose_host_does_not_resolve(self):
        with pytest.raises(UrlConflict, match="does not resolve"):
            urls(port="8099", base_url="http://nowhere.invalid:8099/")

    @pytest.mark.parametrize(("base_url", "ssl"), [("https://localhost:8099/", False), ("http://localhost:8099", True)])
    def test_a_base_url_with_a_scheme_the_api_server_does_not_serve(self, base_url, ssl):
        with pytest.raises(UrlConflict, match=r"AIRFLOW__API__BASE_URL=http"):
            urls(port="8099", base_url=base_url, ssl=ssl)

    @pytest.mark.parametrize("base_url", ["localhost:8099", "ftp://localhost:8099/", "http:///airflow"])
    def test_a_base_url_that_is_not_an_absolute_http_url(self, base_url):
        with pytest.raises(UrlConflict, match=r"\[api\] base_url .* must be an absolute http"):
            urls(port="8099", base_url=base_url)

    def test_an_execution_api_url_on_another_port_says_what_to_set(self):
        with pytest.raises(UrlConflict) as err:
            urls(port="8099", execution_api_url="http://localhost:8080/execution/")
        assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL" in str(err.value)
        assert "http://127.0.0.1:8099/execution/" in str(err.value)

    @pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "80.5"])
    def test_a_port_that_is_not_a_port(self, port):
        with pytest.raises(
            UrlConflict, match=f"AIRFLOW__API__PORT must be a port number from 1 to 65535, got '{port}'"
        ):
            urls(port=port)

    def test_a_port_another_program_listens_on(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(UrlConflict, match=r"AIRFLOW__API__PORT=\d+ \./dev standalone"):
                check_port_free("127.0.0.1", port)
        check_port_free("127.0.0.1", free_port())


# ------------------------------------------------------------------------------------- the dev script


def _dev_standalone(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``./dev standalone`` with ``env`` in a temporary demo folder, for a combination it refuses (so it
    returns before starting Airflow)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    clean.update({"CLICKSTREAM_DEMO_HOME": str(tmp_path / "demo"), **env})
    return subprocess.run(
        [str(REPO_ROOT / "dev"), "standalone"],
        cwd=REPO_ROOT,
        env=clean,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


class TestDevStandalone:
    def test_a_base_url_on_another_port_is_refused_before_anything_starts(self, tmp_path):
        done = _dev_standalone(tmp_path, AIRFLOW__API__PORT="8099", AIRFLOW__API__BASE_URL="http://localhost:8080/")
        assert done.returncode == 2, done.stderr
        assert "standalone: [api] base_url (AIRFLOW__API__BASE_URL) is http://localhost:8080/" in done.stderr
        assert "set AIRFLOW__API__BASE_URL=http://localhost:8099/" in done.stderr
        assert not (tmp_path / "demo" / "airflow.db").exists()  # refused before migrating

    def test_a_taken_port_is_refused_with_a_free_one_to_use(self, tmp_path):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            done = _dev_standalone(tmp_path, AIRFLOW__API__PORT=str(port))
        assert done.returncode == 2, done.stderr
        assert f"port {port} on 127.0.0.1 is not available" in done.stderr
        suggested = done.stderr.split("AIRFLOW__API__PORT=")[1].split()[0]
        assert suggested.isdigit() and int(suggested) != port

    def test_the_urls_command_prints_lines_the_shell_evaluates(self, tmp_path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env["AIRFLOW__API__PORT"] = str(free_port())
        done = subprocess.run(
            [sys.executable, "-m", "clickstream.demo", "--home", str(tmp_path / "demo"), "urls"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        port = env["AIRFLOW__API__PORT"]
        assert done.stdout.splitlines() == [
            "export AIRFLOW__API__HOST=127.0.0.1",
            f"export AIRFLOW__API__PORT={port}",
            f"export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:{port}/execution/",
            f"standalone_url=http://localhost:{port}",
            f"standalone_probe_url=http://127.0.0.1:{port}",
        ]
        assert all(shlex.split(line) for line in done.stdout.splitlines())
