"""Shared pytest configuration for the zoo test-suite.

Hugging Face Hub isolation
--------------------------
``huggingface_hub`` reads its configuration (endpoint, cache folder, token, Xet switch...) from environment
variables *once, when it is first imported*.  This module therefore configures the environment at import time,
before any test module (or timm) imports ``huggingface_hub``:

* ``HF_ENDPOINT``   -> ``http://127.0.0.1:<free port>``, served by :class:`tests.hub_server.HubServer`
                       (started by the ``hub_server`` fixture).  No test can reach the real Hub.
* ``HF_HOME``       -> a fresh temporary folder (cache, token file, xet cache), removed at exit.
* ``HF_TOKEN``      -> a fake token that the test server accepts as user ``zoo-test``.
* ``HF_HUB_DISABLE_XET=1`` -> uploads/downloads use the plain HTTP + git-LFS protocol the test server speaks.
* ``HF_HUB_DISABLE_TELEMETRY=1``.

Variables that would override these (cache paths, offline mode, staging mode, other tokens...) are removed.
``HF_HUB_DISABLE_PROGRESS_BARS`` is left untouched.

Fixtures
--------
* ``hub_server`` (session): the running :class:`HubServer`; ``hub_server.token`` / ``hub_server.user`` are the
  credentials above; ``hub_server.requests`` / ``hub_server.uploads`` record the traffic.
* ``hub_repo`` (function): a fresh, not yet created, repo id ``"zoo-test/repo-<8 hex>"``.
"""

import atexit
import os
import shutil
import socket
import sys
import tempfile
import uuid

import pytest

HUB_USER = "zoo-test"
HUB_TOKEN = "hf_zoo_fake_token_for_tests"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if "huggingface_hub" in sys.modules:  # too late: its constants already point at the real Hub
    raise RuntimeError(
        "huggingface_hub was imported before tests/conftest.py could point it at the local test Hub. "
        "Do not import huggingface_hub (or timm) from plugins or from conftest files loaded earlier."
    )

HUB_PORT = _free_port()
_HF_HOME = tempfile.mkdtemp(prefix="zoo-test-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)

for _name in (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_ASSETS_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_XET_CACHE",
    "HF_TOKEN_PATH",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HUGGINGFACE_CO_STAGING",
    "HF_OIDC_RESOURCE",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN",
    "HF_HUB_ENABLE_HF_TRANSFER",
):
    os.environ.pop(_name, None)

os.environ.update(
    {
        "HF_ENDPOINT": f"http://127.0.0.1:{HUB_PORT}",
        "HF_HOME": _HF_HOME,
        "HF_TOKEN": HUB_TOKEN,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
)


@pytest.fixture(scope="session")
def hub_server():
    """The local Hub (a started :class:`tests.hub_server.HubServer`) that ``HF_ENDPOINT`` points to."""
    from hub_server import HubServer

    server = HubServer(port=HUB_PORT, token=HUB_TOKEN, user=HUB_USER)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hub_repo(hub_server):
    """A unique repo id in the test user's namespace; the repo itself is not created."""
    return f"{HUB_USER}/repo-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def ray_executor():
    """One local Ray for the whole session, started (and shut down) by a RayExecutor; other executors made
    while it runs join it instead of starting their own."""
    try:
        import ray
    except ImportError:
        pytest.skip("Ray is not installed (pip install 'expert-zoo[ray]')")
    from zoo.parallel import ExecutorOptions, RayExecutor

    if ray.is_initialized():
        pytest.skip("another Ray is already running in this process")
    executor = RayExecutor(ExecutorOptions(), local_cpus=2)
    yield executor
    executor.close()
    assert not ray.is_initialized()
