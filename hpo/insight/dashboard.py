"""``hpo dashboard``: optuna-dashboard on a study's storage, bound to localhost by default.

The storage is opened the way every reader opens it (:func:`hpo.coord.storage.open_storage` with
``create=False``): a missing SQLite file or study is an error, and no tables are created. The
dashboard can still write what a person does in it (notes, for instance), like optuna-dashboard
itself. It serves with :mod:`wsgiref`, one request at a time, which is what optuna-dashboard's
own ``run_server`` does; for a shared deployment, serve
``optuna_dashboard.wsgi(open_storage(url, create=False))`` with a WSGI server instead.

A study whose lists of numbers are categorical (created before they became ordinal, or forced)
gets a line saying why its contour and rank plots order those axes as text.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna_dashboard

from hpo.config.pruners import legacy_note
from hpo.config.spec import SPEC_ATTR, StudySpec, explain
from hpo.coord.storage import mask, open_storage
from hpo.errors import HpoError, StorageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class AddressError(HpoError):
    """The port is taken or the address cannot be bound."""

    exit_code = 2


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per request is noise
        pass


def bind(spec: StudySpec, url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
    """Open the storage, check the study is there, and bind the server (port 0: any free port).

    Returns:
        The bound server and the study page's URL.

    Raises:
        StorageError: no database or no such study.
        AddressError: the port is taken or the host cannot be bound.
    """
    storage = open_storage(url, create=False)
    try:
        study_id = storage.get_study_id_from_name(spec.name)
    except KeyError:
        raise StorageError(
            f"no study {spec.name!r} in {mask(url)}; run 'hpo run {spec.source or 'STUDY_FILE'}'"
        ) from None
    try:
        server = make_server(
            host,
            port,
            optuna_dashboard.wsgi(storage),
            server_class=WSGIServer,
            handler_class=_QuietHandler,
        )
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is in use; pick another with --port"
            raise AddressError(message) from None
        raise AddressError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return server, f"http://{host}:{server.server_port}/dashboard/studies/{study_id}"


def serve(
    spec: StudySpec,
    url: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve the dashboard until Ctrl-C, after printing the study page's URL."""
    server, page = bind(spec, url, host, port)
    echo(f"optuna-dashboard for study {spec.name} ({mask(url)}): {page}")
    storage = open_storage(url, create=False)
    stored = storage.get_study_user_attrs(storage.get_study_id_from_name(spec.name))
    for why in (explain(stored.get(SPEC_ATTR)), legacy_note(stored.get(SPEC_ATTR))):
        if why:
            echo(f"note: {why}")
    echo("press Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
