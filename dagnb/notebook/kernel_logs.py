"""One known, harmless race of ipykernel's shutdown, kept out of the kernel's log.

As a kernel shuts down, ipykernel (7.4 and before) may flush its output after its
IOPub sockets were closed: tornado then logs "Uncaught exception in ZMQStream callback"
with a ``ZMQError`` "Socket operation on non-socket" (ENOTSOCK), a 20-line traceback on
the terminal of a ``dagnb run nb.ipynb`` stopped by Ctrl-C or SIGTERM (the kernel
shares its stderr). ipykernel's PR #1518 catches it on one path
(``IOPubThread._really_send``), not on the one seen here (``IOPubThread.schedule``, from
a control message's flush). Nothing is lost there: that record alone is dropped, every
other one of tornado's is kept.
"""

from __future__ import annotations

import errno
import logging
import sys

__all__ = ["quiet_shutdown_race"]


class _ShutdownRace(logging.Filter):
    """Drops a record whose exception is zmq's ENOTSOCK: a socket closed at shutdown."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        zmq = sys.modules.get("zmq")
        closed = getattr(zmq, "ENOTSOCK", errno.ENOTSOCK)
        return not (zmq is not None and isinstance(error, zmq.ZMQError)
                    and error.errno == closed)


_FILTER = _ShutdownRace()


def quiet_shutdown_race() -> None:
    """Keep the race's record out of tornado's log, from this process's kernel on."""
    logger = logging.getLogger("tornado.general")  # (zmqstream's: tornado's gen_log)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
