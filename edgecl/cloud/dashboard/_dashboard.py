"""The dashboard of a running service: its HTTP(S) server and what it needs."""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from typing import Any

from edgecl.cloud._metrics import _http_server
from edgecl.cloud.dashboard._http import DashboardApp
from edgecl.cloud.dashboard._sessions import SessionSigner, load_or_create_key
from edgecl.cloud.dashboard._views import FleetViews

log = logging.getLogger("edgecl.cloud.dashboard")


class Dashboard:
    """Serves the fleet dashboard of ``server`` (a :class:`~edgecl.cloud.CloudServer`) on
    ``[dashboard] bind:port``, over HTTPS when the service has TLS files
    (``tls_files``: certificate chain, key). Logins are the service's operator tokens."""

    def __init__(self, server: Any, tls_files: tuple[Path, Path] | None = None) -> None:
        config = server.config.dashboard
        self.views = FleetViews(server)
        roles = {op.name: op.role for op in server.operators.values()}
        sessions = SessionSigner(load_or_create_key(server.storage_dir / "dashboard.key"),
                                 config.session_ttl_s, roles.get)
        self.app = DashboardApp(self.views, sessions, server.identify_operator,
                                refresh_s=config.refresh_s, secure=tls_files is not None)
        self._http = _http_server(config.bind, config.port, self.app)
        if tls_files is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(tls_files[0]), str(tls_files[1]))
            # the handshake runs on the request's thread, not in accept()
            self._http.socket = context.wrap_socket(self._http.socket, server_side=True,
                                                    do_handshake_on_connect=False)
        self.port = int(self._http.server_port)
        self.scheme = "https" if tls_files is not None else "http"
        self._thread = threading.Thread(target=self._http.serve_forever,
                                        name="edgecl-dashboard", daemon=True)

    @property
    def url(self) -> str:
        """Where the dashboard answers."""
        host = self._http.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}/"

    def start(self) -> Dashboard:
        """Serve in the background; sample the service's rates."""
        self.views.history.start()
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self.views.history.stop()
        self._http.shutdown()
        self._http.server_close()
