"""REST fixtures: an httpx client over the started server's ASGI app, and the DICOMweb store the
retrieve tests read with the core's instances to ingest into it (helpers in `support.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from dicomstore.app import App
from dicomstore.core.instances import Instances
from tests.rest.support import client_for, core_instances, create_wado_store


@pytest.fixture
async def client(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the started server's ASGI app; a module may override it to set more up."""
    assert app.http_app is not None
    async with client_for(app.http_app) as http:
        yield http


@pytest.fixture
async def store(client: httpx.AsyncClient) -> str:
    """The DICOMweb store `support.STORE`, created over REST."""
    return await create_wado_store(client)


@pytest.fixture
def instances(app: App, store: str) -> Instances:
    """The core's instances of the server, to ingest into `store` directly."""
    return core_instances(app)
