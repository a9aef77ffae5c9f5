"""Nothing contacts any address but loopback unless the user configured a remote target or Azure."""
from __future__ import annotations

import socket

import pytest

from tests.conftest import NonLoopbackConnection


def test_the_guard_refuses_other_addresses():
    with pytest.raises(NonLoopbackConnection):
        socket.create_connection(("169.254.169.254", 80), timeout=1)
    with pytest.raises(NonLoopbackConnection):
        socket.getaddrinfo("management.azure.com", 443)


async def test_server_start_and_every_read_stay_on_loopback(api):
    # The guard fails the test on any other connection; these calls are what a sidebar makes.
    for path in ("workspaces", "workspaces/local/kinds", "workspaces/local/targets", "workspaces/local/sizes",
                 "workspaces/local/usage", "workspaces/local/targets/this-machine/nodes", "openapi.json"):
        code, _ = await api("GET", path)
        assert code == 200, path
