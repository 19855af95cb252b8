"""For every test run from this folder (``tests/``, and ``notebooks/`` under nbval): the
kernels the tests start talk over Unix sockets, as ``dagnb run NOTEBOOK``'s do.

A TCP kernel's ports are picked by binding and releasing them, and another process
started at the same moment (a parallel worker's kernel, a dask worker) can take one
before the kernel binds it: the kernel dies with ``Address already in use`` and the test
fails. Every kernel started locally (nbclient's, nbval's, jupyter_client's own) goes
through the local provisioner's ``pre_launch``, which writes the connection file:
switched there, none picks a port. Here, not in ``tests/conftest.py``: ``pytest
notebooks/`` does not load that one."""

from __future__ import annotations

from typing import Any


def _kernels_on_unix_sockets() -> None:
    try:
        from jupyter_client.provisioning.local_provisioner import LocalProvisioner
    except ImportError:
        return
    from dagnb.notebook.kernel_sockets import use_ipc_sockets

    pre_launch = LocalProvisioner.pre_launch

    async def on_unix_sockets(self: Any, **kwargs: Any) -> dict[str, Any]:
        if self.parent is not None:  # (a restart finds its sockets set: left as they are)
            use_ipc_sockets(self.parent)
        return await pre_launch(self, **kwargs)

    LocalProvisioner.pre_launch = on_unix_sockets


_kernels_on_unix_sockets()
