"""`lens serve`: the dashboard and review app."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import sys
import time

import click

ENV_TOKEN = "LENS_TOKEN"
DEFAULT_THREADS = 8


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def served_names(host: str, extra: tuple[str, ...] = ()) -> set[str]:
    """Host names requests may use (besides IP addresses and localhost): ``host`` itself, this
    machine's names when ``host`` is a wildcard address, and ``extra``."""
    names = {host, *extra}
    if host in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname(), socket.getfqdn()}
    return {n for n in names if n}


@click.command()
@click.option("--run", "run_id", default=None, help="Run shown first (default: the newest).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --token.")
@click.option("--port", default=8050, show_default=True, type=int)
@click.option("--token", default=None, envvar=ENV_TOKEN,
              help=f"Access token every request must carry (?token=, X-Lens-Token header or the cookie the first "
                   f"visit sets). Required off loopback; 'auto' makes one up. Env: {ENV_TOKEN}.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Another host name browsers may use to reach the app (a reverse proxy's, an SSH alias). "
                   "Requests naming any other host are refused (DNS rebinding); IP addresses, localhost, "
                   "--host and, on 0.0.0.0/::, this machine's names are always allowed. Repeatable.")
@click.option("--threads", default=DEFAULT_THREADS, show_default=True, type=click.IntRange(1, 256),
              help="Requests served at once by the production server (waitress). Each open page polls "
                   "little; raise it for many reviewers.")
@click.option("--debug", is_flag=True,
              help="Flask's development server with Dash debug mode (reloads on code changes; loopback only).")
@click.pass_obj
def serve(wh, run_id, host, port, token, allow_hosts, threads, debug):
    """Start the dashboard and review form over the warehouse.

    The app opens the warehouse per request and closes it again, so CLI stages can run
    while it is up. Listening on anything but loopback requires an access token. Requests
    must name the server by IP address, localhost, --host or an --allow-host name (so a web
    page cannot reach it through DNS rebinding), and the access log never shows the token.
    The app runs on waitress, a production WSGI server, with --threads worker threads;
    --debug runs Flask's development server instead.

    \b
    Example:
      lens serve --run demo                 # http://127.0.0.1:8050/
      LENS_TOKEN=$(openssl rand -hex 16) lens serve --host 0.0.0.0
    """
    from lens.errors import LensError
    from lens.warehouse import require_run

    loopback = is_loopback(host)
    if token == "auto":
        token = secrets.token_urlsafe(24)
    if not loopback and not token:
        raise LensError(
            f"Refusing to serve on {host} without an access token: anyone on the network could read and write "
            f"reviews. Pass --token SECRET (or set {ENV_TOKEN}, or --token auto), or keep the default --host 127.0.0.1."
        )
    if debug and not loopback:
        raise LensError("--debug runs arbitrary code on request errors: use it on 127.0.0.1 only.")
    with wh.connect() as con:
        if run_id is not None:
            require_run(con, run_id)

    from dashboards.app import create_app

    app = create_app(wh, run_id=run_id, token=token, allowed_hosts=served_names(host, allow_hosts))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    click.echo(f"Lens dashboard on {url}  (warehouse {wh.path}; Ctrl+C stops it)")
    if debug:
        app.run(host=host, port=port, debug=True)
        return
    run_production(app.server, host=host, port=port, threads=threads, token=token)


def access_log(wsgi_app, token: str | None):
    """Wrap a WSGI app so each request is logged to stderr in the common log format, tokens
    redacted (``token=[redacted]``) like the development server's log."""
    from dashboards.app import RedactTokens

    logger = logging.getLogger("lens.access")
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    redact = RedactTokens()
    if token:
        redact.tokens.add(token)
    logger.filters = [redact]

    def logged(environ, start_response):
        def start(status, headers, exc_info=None):
            target = environ.get("RAW_URI") or environ.get("PATH_INFO", "")
            if not environ.get("RAW_URI") and environ.get("QUERY_STRING"):
                target += "?" + environ["QUERY_STRING"]
            when = time.strftime("%d/%b/%Y %H:%M:%S", time.gmtime())
            logger.info('%s - - [%s] "%s %s %s" %s -', environ.get("REMOTE_ADDR", "-"), when,
                        environ.get("REQUEST_METHOD", "-"), target, environ.get("SERVER_PROTOCOL", "-"),
                        status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        return wsgi_app(environ, start)

    return logged


def run_production(wsgi_app, *, host: str, port: int, threads: int = DEFAULT_THREADS, token: str | None = None) -> None:
    """Serve ``wsgi_app`` with waitress (pure Python, production grade) until interrupted."""
    from waitress import serve as waitress_serve

    logging.getLogger("waitress").setLevel(logging.ERROR)  # its start banner would repeat our URL line
    waitress_serve(access_log(wsgi_app, token), host=host, port=port, threads=threads, ident="lens",
                   clear_untrusted_proxy_headers=True)


commands = [serve]
