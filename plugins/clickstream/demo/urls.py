"""The addresses of ``./dev standalone``, kept consistent: where the API server listens, where the tasks
reach its Execution API, where a browser reaches the UI; and the combinations it refuses.

Airflow derives ``[core] execution_api_server_url`` from ``[api] base_url`` and, without one, from
``http://localhost:8080``, never from ``[api] port``: an API server moved to another port with
``AIRFLOW__API__PORT`` alone serves the UI, but every task's supervisor calls port 8080 and the task fails
("Connection refused"). :func:`standalone_urls` derives the Execution API's URL from the address the API
server listens on (and the path of ``[api] base_url``), so the port is set in one place, and refuses a
``base_url`` or an explicit ``execution_api_server_url`` that the API server would not answer at, with a
message naming what to set. :func:`check_port_free` refuses a port another program holds (else the banner
could take that program's answer for Airflow's).

Nothing here imports Airflow; ``python -m clickstream.demo urls`` reads the settings through Airflow's
configuration (environment, ``airflow.cfg``, deprecated names) and prints the result as shell lines.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

#: ``./dev standalone``'s defaults: loopback only (the admin's password is known), Airflow's usual port.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: Listening on these means every address of the machine.
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "*"}

Resolver = Callable[[str], set[str]]


class UrlConflict(ValueError):
    """A combination of host, port and URLs that ``./dev standalone`` cannot serve; the message says what
    to set."""


@dataclass(frozen=True)
class StandaloneUrls:
    """Where everything of ``./dev standalone`` is.

    :param host: the address the API server listens on (``AIRFLOW__API__HOST``).
    :param port: its port (``AIRFLOW__API__PORT``).
    :param local: its root as processes on this machine call it, e.g. ``http://127.0.0.1:8099`` (no
        trailing slash; with the path of ``[api] base_url``, if it has one).
    :param public: its root as the banner shows it to a person: ``[api] base_url`` if set, else
        ``http://localhost:<port>`` (no trailing slash).
    :param execution_api: ``[core] execution_api_server_url``: the one set, if the API server answers
        there, else ``<local>/execution/``.
    """

    host: str
    port: int
    local: str
    public: str
    execution_api: str


def parse_port(raw: str | None, *, name: str = "AIRFLOW__API__PORT") -> int | None:
    """A TCP port given as text; None when ``raw`` is None or empty.

    :param raw: the text.
    :param name: the setting it came from, for the error message.
    :raises UrlConflict: not a number from 1 to 65535.
    """
    if raw is None or not raw.strip():
        return None
    try:
        port = int(raw.strip())
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise UrlConflict(f"{name} must be a port number from 1 to 65535, got {raw!r}")
    return port


def resolve(host: str) -> set[str]:
    """The IP addresses ``host`` (a name or an address) stands for; empty if it does not resolve.

    :param host: a host name or an IP address (IPv6 without brackets).
    """
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError):
        return set()


def _url_host(host: str) -> str:
    """``host`` as it goes into a URL (an IPv6 address in brackets)."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def _is_loopback(host: str, resolver: Resolver) -> bool:
    addresses = resolver(host)
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def _connect_host(listen_host: str) -> str:
    """Where a process on this machine calls an API server that listens on ``listen_host``."""
    if listen_host in _WILDCARD_HOSTS:
        return "::1" if listen_host == "::" else DEFAULT_HOST
    return listen_host


def _port_of(url: str, name: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path)`` of an absolute http(s) URL; the port defaults by the scheme.

    :raises UrlConflict: not an absolute http(s) URL, or a bad port.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlConflict(f"{name} must be an absolute http:// or https:// URL, got {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UrlConflict(f"{name} has a bad port: {url!r}") from None
    return parts.scheme, parts.hostname, port, parts.path


def _served_at(url: str, name: str, *, scheme: str, host: str, port: int, resolver: Resolver, fix: str) -> None:
    """Check that the API server (``scheme`` on ``host``:``port``) answers at ``url``.

    :param fix: the sentence that says what to set instead.
    :raises UrlConflict: it would not, with a message naming ``name`` and ``fix``.
    """
    url_scheme, url_host, url_port, _path = _port_of(url, name)
    if url_port != port:
        raise UrlConflict(
            f"{name} is {url} (port {url_port}), but the API server listens on port {port} (AIRFLOW__API__PORT): {fix}"
        )
    if url_scheme != scheme:
        raise UrlConflict(
            f"{name} is {url} ({url_scheme}), but the API server serves {scheme} "
            f"({'[api] ssl_cert is set' if scheme == 'https' else 'no [api] ssl_cert'}): {fix}"
        )
    if host not in _WILDCARD_HOSTS:
        names = resolver(url_host)
        if not names:
            raise UrlConflict(f"{name} is {url}, but its host {url_host!r} does not resolve: {fix}")
        if not names & resolver(host):
            raise UrlConflict(
                f"{name} is {url}, but the API server listens on {host} only (AIRFLOW__API__HOST), "
                f"not on {url_host}: {fix}"
            )


def standalone_urls(
    *,
    host: str | None,
    port: str | None,
    base_url: str | None,
    execution_api_url: str | None,
    ssl: bool = False,
    resolver: Resolver = resolve,
) -> StandaloneUrls:
    """Where the API server of ``./dev standalone`` listens and how everything else reaches it.

    The port is ``AIRFLOW__API__PORT``, else the port of ``[api] base_url`` when that is set (as a URL, not
    only a path), else 8080;
    the host is ``AIRFLOW__API__HOST``, else ``127.0.0.1``. The Execution API's URL follows them (with the
    path of ``base_url``), unless ``execution_api_server_url`` is set and already reaches the API server.

    :param host: ``AIRFLOW__API__HOST`` (None or empty: the default).
    :param port: ``AIRFLOW__API__PORT`` as text (None or empty: see above).
    :param base_url: ``[api] base_url`` (None or empty: not set).
    :param execution_api_url: ``[core] execution_api_server_url`` (None or empty: not set).
    :param ssl: whether the API server serves https (``[api] ssl_cert`` is set).
    :param resolver: host name -> IP addresses (:func:`resolve`; tests pass a table).
    :raises UrlConflict: a combination the API server would not answer at; the message says what to set.
    """
    listen_host = (host or "").strip() or DEFAULT_HOST
    scheme = "https" if ssl else "http"
    base_url = (base_url or "").strip() or None
    name = "[api] base_url (AIRFLOW__API__BASE_URL)"
    relative = base_url is not None and base_url.startswith("/")  # a path only, as Airflow also takes it
    listen_port = parse_port(port)
    if listen_port is None:
        listen_port = _port_of(base_url, name)[2] if base_url and not relative else DEFAULT_PORT
    local_root = f"{scheme}://{_url_host(_connect_host(listen_host))}:{listen_port}"
    shown_host = (
        "localhost" if listen_host in _WILDCARD_HOSTS or _is_loopback(listen_host, resolver) else _url_host(listen_host)
    )
    public = f"{scheme}://{shown_host}:{listen_port}"
    path = ""
    if base_url and relative:
        path = urlsplit(base_url).path.rstrip("/")
        public += path
    elif base_url:
        path = _port_of(base_url, name)[3].rstrip("/")
        _served_at(
            base_url,
            name,
            scheme=scheme,
            host=listen_host,
            port=listen_port,
            resolver=resolver,
            fix=f"set AIRFLOW__API__BASE_URL={public}{path}/ (or leave it unset), "
            "or AIRFLOW__API__HOST / AIRFLOW__API__PORT to the host and port it names",
        )
        public = base_url.rstrip("/")
    local = local_root + path
    derived = f"{local}/execution/"
    execution_api = derived
    if execution_api_url and execution_api_url.strip():
        _served_at(
            execution_api_url.strip(),
            "[core] execution_api_server_url (AIRFLOW__CORE__EXECUTION_API_SERVER_URL)",
            scheme=scheme,
            host=listen_host,
            port=listen_port,
            resolver=resolver,
            fix=f"leave it unset (./dev standalone then uses {derived}) or set it to that",
        )
        execution_api = execution_api_url.strip()
    return StandaloneUrls(host=listen_host, port=listen_port, local=local, public=public, execution_api=execution_api)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port that another program already listens on (at ``host``).

    :param host: the address the API server will listen on.
    :param port: its port.
    :raises UrlConflict: the port is taken; the message suggests a free one.
    """
    bind_host = "" if host in _WILDCARD_HOSTS - {"::"} else host
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the API server does: TIME_WAIT is fine
        try:
            sock.bind((bind_host, port))
        except OSError as exc:
            raise UrlConflict(
                f"port {port} on {host or '0.0.0.0'} is not available ({exc.strerror}; another program, or a "
                f"./dev standalone still running?): choose another one, e.g. "
                f"AIRFLOW__API__PORT={_free_port(bind_host, family)} ./dev standalone"
            ) from None


def _free_port(host: str, family: socket.AddressFamily) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def shell_lines(urls: StandaloneUrls) -> list[str]:
    """``urls`` as the lines ``./dev standalone`` evaluates: exports for Airflow, and two shell variables
    (``standalone_url`` for the banner, ``standalone_probe_url`` for the readiness check).

    :param urls: the result of :func:`standalone_urls`.
    """
    import shlex

    exports = {
        "AIRFLOW__API__HOST": urls.host,
        "AIRFLOW__API__PORT": str(urls.port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": urls.execution_api,
    }
    lines = [f"export {key}={shlex.quote(value)}" for key, value in exports.items()]
    lines.append(f"standalone_url={shlex.quote(urls.public)}")
    lines.append(f"standalone_probe_url={shlex.quote(urls.local)}")
    return lines
