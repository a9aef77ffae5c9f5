"""Fixtures of the target-kernel tests: a Jupyter data folder of each test's own, and the closing of
the ``Compute`` the provisioner keeps per store (kernels start in this process)."""
import pytest


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A Jupyter data folder of the test's own: kernelspecs are written there, and read from there."""
    path = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def close_provisioner_computes(jp_asyncio_loop):
    yield
    from jupyter_compute.kernels import provisioner

    computes = list(provisioner._computes.values())
    provisioner._computes.clear()
    for compute in computes:
        jp_asyncio_loop.run_until_complete(compute.close())
