"""ipykernel's shutdown race (a flush after its IOPub sockets closed) logs a ZMQError
traceback through tornado; a kernel with dagnb loaded keeps that record alone out."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys

import pytest
import zmq

from dagnb.notebook import kernel_logs
from dagnb.notebook.kernel_logs import quiet_shutdown_race


@pytest.fixture
def tornado_log():
    """What tornado's ``gen_log`` passes on, and its filters as they were, afterwards."""
    logger = logging.getLogger("tornado.general")
    kept: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = kept.append  # type: ignore[method-assign]
    filters, propagate, level = list(logger.filters), logger.propagate, logger.level
    disabled = logging.root.manager.disable
    # (as a fresh kernel's: a test before may have loaded dagnb in this process, or
    # quieted tornado, as a kernel client's log level does)
    logger.filters[:] = [f for f in filters if f is not kernel_logs._FILTER]
    logger.setLevel(logging.DEBUG)
    logging.disable(logging.NOTSET)
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, kept
    logger.removeHandler(handler)
    logger.filters[:], logger.propagate = filters, propagate
    logger.setLevel(level)
    logging.disable(disabled)


def _logged(logger: logging.Logger, error: BaseException) -> None:
    try:
        raise error
    except BaseException:
        logger.error("Uncaught exception in ZMQStream callback", exc_info=True)


def test_the_closed_socket_record_is_dropped_and_every_other_kept(tornado_log) -> None:
    logger, kept = tornado_log
    _logged(logger, zmq.ZMQError(zmq.ENOTSOCK))
    assert len(kept) == 1  # (before: tornado's record reaches the terminal)
    quiet_shutdown_race()
    quiet_shutdown_race()  # (a second %load_ext: one filter)
    _logged(logger, zmq.ZMQError(zmq.ENOTSOCK))
    _logged(logger, zmq.ZMQError(zmq.EAGAIN))
    _logged(logger, OSError(errno.ENOTSOCK, "not a zmq error"))
    logger.warning("Got events for closed stream")
    rest = kept[1:]
    assert [type(r.exc_info[1]).__name__ if r.exc_info else r.getMessage()
            for r in rest] == ["ZMQError", "OSError", "Got events for closed stream"]
    assert rest[0].exc_info[1].errno == zmq.EAGAIN


def test_loading_the_extension_quiets_it(shell, tornado_log) -> None:
    logger, kept = tornado_log
    shell.run_line_magic("load_ext", "dagnb")
    _logged(logger, zmq.ZMQError(zmq.ENOTSOCK))
    assert kept == []


RACE = ("import logging, zmq\n"
        "try:\n"
        "    raise zmq.ZMQError(zmq.ENOTSOCK)\n"
        "except zmq.ZMQError:\n"
        "    logging.getLogger('tornado.general').error(\n"
        "        'Uncaught exception in ZMQStream callback', exc_info=True)\n"
        "logging.getLogger('tornado.general').error('another of tornado\\'s errors')")


@pytest.mark.slow
@pytest.mark.parametrize("loaded", [True, False], ids=["dagnb-loaded", "no-dagnb"])
def test_a_dagnb_run_s_terminal_shows_no_race_traceback_from_its_kernel(
        tmp_path, loaded: bool) -> None:
    """Through ``dagnb run nb.ipynb``: the kernel's tornado log reaches the terminal."""
    import nbformat  # (here: 1.5 s to import, for the slow tests alone)

    cells = (["%load_ext dagnb"] if loaded else []) + [RACE]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbformat.write(notebook, tmp_path / "nb.ipynb")
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "nb.ipynb"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DAGNB_CONFIG": "none"})
    assert done.returncode == 0, done.stderr
    assert "another of tornado's errors" in done.stderr  # (the kernel's log is shown)
    assert ("ZMQError" in done.stderr) is not loaded, done.stderr
