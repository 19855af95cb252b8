"""Kernels whose channels are Unix sockets, not TCP ports (``dagnb run NOTEBOOK``).

jupyter_client picks a TCP kernel's five ports by binding each to port 0 and releasing
it: another process started at the same moment can take one before the kernel binds it,
and the kernel dies at start (``ZMQError: Address already in use``). With jupyter_client's
``transport="ipc"`` the channels are Unix sockets named after the connection file, which
``mkstemp`` made unique: no port is chosen, so there is no race to lose. Interrupts
(a signal), restarts (the same socket names, bound again) and comms (messages on the
same channels) are as over TCP.

TCP stays on Windows (ipykernel's ipc is for Unix), for a kernel that is not ipykernel's
(not every kernel honors the transport it is given), for a manager already set up
(a connection file named, a transport chosen) and where a socket's path would pass
AF_UNIX's length limit (a long ``TMPDIR``): there the race remains, as before.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from typing import Any

# sun_path holds 108 bytes on Linux and 104 on macOS, the last one the path's NUL
_PATH_LIMIT = 103 if sys.platform == "darwin" else 107
# what a socket's path adds to the connection file's: jupyter_client's "-ipc", then
# "-N" for the channel (1 to 5 for a new prefix; two digits leave room)
_SOCKET_SUFFIX = "-ipc-99"
_NAME = "kernel-"  # then mkstemp's 8 characters


def use_ipc_sockets(manager: Any) -> bool:
    """Set a jupyter_client ``KernelManager`` not started yet to talk to its kernel
    over Unix sockets beside a new connection file in the temporary folder; False (the
    manager untouched) where it keeps TCP (see the module docstring)."""
    if os.name == "nt" or manager.transport != "tcp" or manager.connection_file:
        return False
    if not _runs_ipykernel(manager):
        return False
    folder = tempfile.gettempdir()
    longest = os.path.join(folder, f"{_NAME}{'x' * 8}{_SOCKET_SUFFIX}")
    if len(os.fsencode(longest)) > _PATH_LIMIT:
        return False
    fd, connection_file = tempfile.mkstemp(".json", _NAME, folder)
    os.close(fd)  # (jupyter_client writes it, and removes it with the sockets at the end)
    manager.transport = "ipc"
    manager.connection_file = connection_file
    # (jupyter_client's own default for ipc, set here: one read before would be TCP's)
    manager.ip = os.path.splitext(connection_file)[0] + "-ipc"
    manager.cache_ports = False  # (its cache hands out TCP ports, which would name sockets)
    return True


def _runs_ipykernel(manager: Any) -> bool:
    """Whether the manager's kernel is ipykernel's, by its command (jupyter_client's own
    ``ipykernel`` goes by the kernel's name: nbval's kernel in the current environment
    is named ``:nbval-parent-env``)."""
    from jupyter_client.kernelspec import NoSuchKernel

    try:
        spec = manager.kernel_spec
    except NoSuchKernel:  # (jupyter_client says so as it starts it)
        return False
    return spec is not None and any("ipykernel" in part for part in spec.argv)


@functools.cache
def ipc_kernel_manager() -> type:
    """nbclient's default kernel manager, on Unix sockets where :func:`use_ipc_sockets`
    can set them up."""
    from jupyter_client import AsyncKernelManager

    class IpcKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:
            use_ipc_sockets(self)  # (a restart does not come here: it keeps its sockets)
            await super().start_kernel(**kw)

    return IpcKernelManager
