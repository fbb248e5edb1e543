"""The fleet dashboard: web pages served by the cloud service (``[dashboard] port``).

Operators log in with their ``[admin] operators`` token; the ``read`` role sees, the
``operator`` role may also pause, resume, abort and roll back from the page.
"""

from edgecl.cloud.dashboard._dashboard import Dashboard
from edgecl.cloud.dashboard._sessions import Session, SessionSigner

__all__ = ["Dashboard", "Session", "SessionSigner"]
