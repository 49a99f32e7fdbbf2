"""gateway/loaders/rest/memo.py: what is made of the upstream's JSON lives no longer than it."""

from __future__ import annotations

import gc
import weakref

import httpx

from gateway.loaders.rest.memo import Memo
from gateway.loaders.rest.wire import PackageJSON, decode
from tests.fake_upstream import FakeUpstream


def test_a_package_made_once_per_json_and_forgotten_with_it(upstream: FakeUpstream) -> None:
    row = upstream.dataset.packages[0]
    body = httpx.get(f"{upstream.base_url}packages/{row.id}/", timeout=30).content
    raw = decode(body, PackageJSON, "packages/")
    record = Memo().remember_package(raw)
    assert record.slug == row.slug
    assert Memo().remember_package(raw) is record  # made once, while the JSON lives
    json = weakref.ref(raw)
    del raw
    gc.collect()
    # Once the resource cache (and every request) let go of the JSON, nothing holds it.
    assert json() is None
