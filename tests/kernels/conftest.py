"""Kernels on targets are started in this process by jupyter_client's kernel manager, whose
provisioner keeps a ``Compute`` per store: each test's is closed after it."""
import pytest


@pytest.fixture(autouse=True)
def close_provisioner_computes(jp_asyncio_loop):
    yield
    from jupyter_compute.kernels import provisioner

    computes = list(provisioner._computes.values())
    provisioner._computes.clear()
    for compute in computes:
        jp_asyncio_loop.run_until_complete(compute.close())
