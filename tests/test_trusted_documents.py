"""Trusted documents: a manifest of the clients' documents, named by `documentId` or by an APQ
hash, optionally the only documents that run; read again on SIGHUP; checked before release.

The gateways here are real (uvicorn on loopback, over the fake APIv4); SIGHUP goes to real
`gateway serve` processes, one alone and two workers, while a client keeps sending requests.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import configure
from gateway.errors import ConfigError
from tests.fake_upstream import FakeUpstream
from tests.observing import Metrics, served
from tests.test_workers import _env, _free_port, _workers
from tests.waiting import STARTED, Output, frozen

CATEGORIES = "query Categories { categories { totalCount } }"
GRID = "query Grid($id: Int!) { grid(id: $id) { slug } }"
OTHER = "query Other { __typename }"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
STRICT = {"accept": "application/graphql-response+json"}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _apq(text: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": _sha(text)}}


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """graphql-codegen's ids (the SHA-256 of the text) and a Relay-style one."""
    path = tmp_path / "persisted-documents.json"
    path.write_text(json.dumps({_sha(CATEGORIES): CATEGORIES, _sha(GRID): GRID, "relay:7": GRID}))
    return path


def _codes(response: httpx.Response) -> list[str]:
    return [error["extensions"]["code"] for error in response.json().get("errors", [])]


def _data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def test_a_request_runs_the_document_its_id_names(manifest: Path, upstream: FakeUpstream) -> None:
    grid = upstream.dataset.grids[0]
    count = {"categories": {"totalCount": len(upstream.dataset.categories)}}
    settings: dict[str, Any] = {"upstream": upstream.base_url, "warm_catalogue": False}
    with served(**settings, trusted_documents=str(manifest)) as client:
        # POST, by the bare hash and by `sha256:<hash>` (Hive Router's form), with variables.
        assert _data(client.post("/graphql", json={"documentId": _sha(CATEGORIES)})) == count
        by_prefix = {"documentId": f"sha256:{_sha(GRID)}", "variables": {"id": grid.id}}
        assert _data(client.post("/graphql", json=by_prefix)) == {"grid": {"slug": grid.slug}}
        # GET, by a Relay-style id, with variables and an operation name.
        params = {"documentId": "relay:7", "variables": json.dumps({"id": grid.id})}
        response = client.get("/graphql", params={**params, "operationName": "Grid"})
        assert _data(response) == {"grid": {"slug": grid.slug}}
        # A browser asking by id gets the answer, not GraphiQL.
        response = client.get("/graphql", params=params, headers={"accept": BROWSER_ACCEPT})
        assert _data(response) == {"grid": {"slug": grid.slug}}
        # A batch: each operation its own document.
        batch = [{"documentId": _sha(CATEGORIES)}, {"query": OTHER}]
        response = client.post("/graphql", json=batch)
        assert response.status_code == 200
        assert [body["data"] for body in response.json()] == [count, {"__typename": "Query"}]


def test_an_id_the_manifest_does_not_hold_is_refused_with_400(
    manifest: Path, upstream: FakeUpstream
) -> None:
    settings: dict[str, Any] = {"upstream": upstream.base_url, "warm_catalogue": False}
    with served(**settings, trusted_documents=str(manifest)) as client:
        seen = Metrics(client)
        refused = [
            client.post("/graphql", json={"documentId": "sha256:" + "0" * 64}),
            client.post("/graphql", json={"documentId": "relay:8"}, headers=STRICT),
            client.get("/graphql", params={"documentId": "nope"}),
            client.post("/graphql", json={"documentId": 7}),
            client.post("/graphql", json=[{"documentId": _sha(GRID)}, {"documentId": "nope"}]),
        ]
        both = client.post("/graphql", json={"documentId": _sha(CATEGORIES), "query": OTHER})
        seen.read()
    for response in refused:
        assert response.status_code == 400, response.text
        assert response.json() == {
            "errors": [
                {
                    "message": "No trusted document has this id or hash",
                    "extensions": {"code": "PERSISTED_DOCUMENT_NOT_FOUND"},
                }
            ]
        }
    assert both.status_code == 400
    assert _codes(both) == ["BAD_USER_INPUT"]
    assert seen.gained("gateway_refusals_total", limit="trusted_documents") == len(refused)
    assert upstream.requests == []


def test_an_apollo_hash_finds_a_manifest_document_at_once(
    manifest: Path, upstream: FakeUpstream
) -> None:
    """No PERSISTED_QUERY_NOT_FOUND round trip for a document the manifest holds; text and
    other hashes still go through APQ as ever."""
    settings: dict[str, Any] = {"upstream": upstream.base_url, "warm_catalogue": False}
    with served(**settings, trusted_documents=str(manifest)) as client:
        response = client.post("/graphql", json={"extensions": _apq(CATEGORIES)})
        assert _data(response) == {"categories": {"totalCount": len(upstream.dataset.categories)}}
        params = {"extensions": json.dumps(_apq(CATEGORIES))}
        assert _data(client.get("/graphql", params=params))["categories"]
        # Not in the manifest: Apollo's protocol, registration included.
        unknown = client.post("/graphql", json={"extensions": _apq(OTHER)})
        assert unknown.status_code == 200
        assert _codes(unknown) == ["PERSISTED_QUERY_NOT_FOUND"]
        registered = client.post("/graphql", json={"query": OTHER, "extensions": _apq(OTHER)})
        assert _data(registered) == {"__typename": "Query"}
        assert _data(client.post("/graphql", json={"extensions": _apq(OTHER)}))
        # Any text runs, as without a manifest.
        assert _data(client.post("/graphql", json={"query": "{ __typename }"}))


def test_with_trusted_documents_required_only_the_manifests_documents_run(
    manifest: Path, upstream: FakeUpstream
) -> None:
    settings: dict[str, Any] = {"upstream": upstream.base_url, "warm_catalogue": False}
    with served(
        **settings, trusted_documents=str(manifest), require_trusted_documents=True
    ) as client:
        seen = Metrics(client)
        assert _data(client.post("/graphql", json={"documentId": _sha(CATEGORIES)}))
        # The manifest's text, sent as text (by its SHA-256), or by its APQ hash.
        assert _data(client.post("/graphql", json={"query": CATEGORIES}))
        assert _data(client.post("/graphql", json={"extensions": _apq(CATEGORIES)}))
        required = [
            client.post("/graphql", json={"query": OTHER}),
            client.get("/graphql", params={"query": OTHER}),
            client.post("/graphql", json={"query": CATEGORIES + " "}),  # not the same text
            # An APQ registration, and a batch with one operation of text.
            client.post("/graphql", json={"query": OTHER, "extensions": _apq(OTHER)}),
            client.post("/graphql", json=[{"documentId": _sha(GRID)}, {"query": OTHER}]),
        ]
        # An APQ hash outside the manifest: nothing else may run, so it is not found.
        unknown = client.post("/graphql", json={"extensions": _apq(OTHER)})
        seen.read()
    for response in required:
        assert response.status_code == 400, response.text
        assert _codes(response) == ["PERSISTED_DOCUMENT_ID_REQUIRED"]
    assert unknown.status_code == 400
    assert _codes(unknown) == ["PERSISTED_DOCUMENT_NOT_FOUND"]
    gained = seen.gained("gateway_refusals_total", limit="trusted_documents")
    assert gained == len(required) + 1


def test_a_get_by_document_id_is_cached_as_get_queries_are(
    manifest: Path, upstream: FakeUpstream
) -> None:
    settings: dict[str, Any] = {"upstream": upstream.base_url, "warm_catalogue": False}
    with served(**settings, trusted_documents=str(manifest)) as client:
        params = {"documentId": _sha(CATEGORIES)}
        first = client.get("/graphql", params=params)
        assert _data(first)
        assert first.headers["cache-control"].startswith("public, max-age=")
        assert first.headers["vary"] == "Accept"
        etag = first.headers["etag"]
        upstream.reset()
        again = client.get("/graphql", params=params, headers={"if-none-match": etag})
        assert again.status_code == 304
        assert again.content == b""
        # The same answer as its text's: one cache entry, one ETag.
        by_text = client.get("/graphql", params={"query": CATEGORIES})
        assert by_text.headers["etag"] == etag
        assert upstream.requests == []


# -- start-up, configuration and `gateway documents check` -----------------------------------


def _gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        encoding="utf-8",
        env=_env(),
        cwd=cwd,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot be read: No such file or directory"),
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        (json.dumps({"a": 1}), "the document 'a' is not a string"),
        (json.dumps({"a": "{ categories {"}), "a: GRAPHQL_PARSE_FAILED: Syntax Error"),
        (
            json.dumps({"ok": OTHER, "a": "{ nope }", "b": "{ nope2 }"}),
            "a: GRAPHQL_VALIDATION_FAILED: Cannot query field 'nope' on type 'Query'",
        ),
    ],
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_manifest_that_cannot_serve_stops_start_up_in_one_line(
    tmp_path: Path, content: str | None, needle: str, workers: str
) -> None:
    path = tmp_path / "manifest.json"
    if content is not None:
        path.write_text(content)
    command = ["serve", "--port", str(_free_port()), "--workers", workers]
    # Nothing listens on port 1: the upstream is never called, the manifest alone stops it.
    command += ["--upstream", "http://127.0.0.1:1/api/v4/", "--no-warm-catalogue"]
    run = _gateway(*command, "--trusted-documents", str(path), cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    [line] = run.stderr.splitlines()
    assert line.startswith(f"gateway: error: {path}: ")
    assert needle in line


def test_the_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="require trusted documents needs a manifest"):
        configure({"require_trusted_documents": True})
    with pytest.raises(ConfigError, match="trusted documents must name a file"):
        configure({"trusted_documents": " "})
    settings = configure(
        {"trusted_documents": "m.json"}, {"GATEWAY_REQUIRE_TRUSTED_DOCUMENTS": "true"}
    ).settings
    assert settings.trusted_documents == "m.json"
    assert settings.require_trusted_documents


def test_documents_check_passes_a_manifest_within_the_limits(
    manifest: Path, tmp_path: Path
) -> None:
    run = _gateway("documents", "check", str(manifest), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == (
        f"{manifest}: every document parses, validates and keeps within the limits\n"
    )


def test_documents_check_prints_one_line_per_bad_document(tmp_path: Path) -> None:
    documents = {
        "good": "query Page($n: Int) { packages(first: $n) { nodes { slug } } }",
        "parse": "{ categories {",
        "invalid": "{ nope }",
        "deep": "{ packages { nodes { category { packages { nodes { category { slug } } } } } } }",
        # Two pages of at most 100 each: 100 * (1 + 100) whatever the client sends.
        "costly": "query C($n: Int!) { packages(first: $n) { nodes { grids(first: $n)"
        " { nodes { slug } } } } }",
        "aliases": "{ a: __typename b: __typename c: __typename }",
        "tokens": "{ %s }" % " ".join(["__typename"] * 150),
        "introspection": "{ __schema { queryType { name } } }",
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(documents))
    limits = ["--max-depth", "5", "--max-cost", "10000", "--max-aliases", "2"]
    limits += ["--max-tokens", "100", "--no-introspection"]
    run = _gateway("documents", "check", str(path), *limits, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    codes = {
        "parse": "GRAPHQL_PARSE_FAILED",
        "invalid": "GRAPHQL_VALIDATION_FAILED",
        "deep": "QUERY_TOO_DEEP",
        "costly": "QUERY_TOO_COSTLY",
        "aliases": "TOO_MANY_ALIASES",
        "tokens": "TOO_MANY_TOKENS",
        "introspection": "INTROSPECTION_DISABLED",
    }
    assert len(lines) == len(codes), run.stdout
    for line, (key, code) in zip(lines, codes.items(), strict=True):
        assert line.startswith(f"{path}: {key}: {code}: "), line
    assert "estimated cost is 10100" in lines[3]
    # The same documents within laxer limits: only those the schema refuses are bad.
    run = _gateway("documents", "check", str(path), cwd=tmp_path)
    assert run.returncode == 1
    assert [line.split(": ")[1] for line in run.stdout.splitlines()] == ["parse", "invalid"]


def test_documents_check_of_an_unreadable_manifest_is_one_error_line(tmp_path: Path) -> None:
    run = _gateway("documents", "check", str(tmp_path / "missing.json"), cwd=tmp_path)
    assert run.returncode == 2
    assert run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line.startswith("gateway: error: ") and "cannot be read" in line


# -- SIGHUP on real processes ------------------------------------------------------------------


@dataclass
class Served:
    origin: str
    log: Output
    process: subprocess.Popen[str]

    def post(self, body: Any) -> httpx.Response:
        # A new connection each time: with workers, whichever is running accepts it.
        return httpx.post(f"{self.origin}/graphql", json=body, timeout=15)


@contextmanager
def serving(tmp_path: Path, upstream: FakeUpstream, workers: int, *flags: str) -> Iterator[Served]:
    """`gateway serve --workers N` over the fake APIv4 with `flags`, until the block ends."""
    port = _free_port()
    command = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
    command += ["--upstream", upstream.base_url, "--no-warm-catalogue", "--log-level", "info"]
    command += ["--workers", str(workers), *flags]
    process = subprocess.Popen(
        command,
        env=_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = Output(process.stderr)
    try:
        log.wait_for(STARTED, count=workers)
        yield Served(f"http://127.0.0.1:{port}", log, process)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    assert "Traceback" not in log.text
    assert process.returncode == -signal.SIGTERM


@contextmanager
def _steady_client(gateway: Served) -> Iterator[list[httpx.Response]]:
    """Requests for a document every version of the manifest holds, one after another, until
    one more is answered after the block ends (however slow the machine): every one must be
    answered."""
    answers: list[httpx.Response] = []
    answered = threading.Condition()
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=gateway.origin, timeout=15) as client:
            while not stop.is_set():
                response = client.post("/graphql", json={"documentId": _sha(CATEGORIES)})
                with answered:
                    answers.append(response)
                    answered.notify_all()

    def one_more_answer() -> None:
        with answered:
            seen = len(answers)
            answered.wait_for(lambda: len(answers) > seen or not thread.is_alive(), timeout=30)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield answers
    finally:
        one_more_answer()
        stop.set()
        thread.join(timeout=30)


def test_sighup_reads_the_manifest_again_without_dropping_a_request(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"c": CATEGORIES}))
    with serving(tmp_path, upstream, 1, "--trusted-documents", str(manifest)) as gateway:
        assert _codes(gateway.post({"documentId": "o"})) == ["PERSISTED_DOCUMENT_NOT_FOUND"]
        with _steady_client(gateway) as answers:
            manifest.write_text(
                json.dumps({"c": CATEGORIES, "o": OTHER, _sha(CATEGORIES): CATEGORIES})
            )
            os.kill(gateway.process.pid, signal.SIGHUP)
            gateway.log.wait_for("trusted documents: 3 read from", 1)
            assert _data(gateway.post({"documentId": "o"})) == {"__typename": "Query"}

            # A manifest with a document that does not validate: the old one stays.
            manifest.write_text(json.dumps({"c": CATEGORIES, "bad": "{ nope }"}))
            os.kill(gateway.process.pid, signal.SIGHUP)
            gateway.log.wait_for("trusted documents: kept the 3 in use", 1)
            assert _data(gateway.post({"documentId": "o"})) == {"__typename": "Query"}
            # And one that cannot be read at all.
            manifest.unlink()
            os.kill(gateway.process.pid, signal.SIGHUP)
            gateway.log.wait_for("trusted documents: kept the 3 in use", 2)
            assert _data(gateway.post({"documentId": "o"})) == {"__typename": "Query"}
        assert answers
        assert all(response.status_code == 200 for response in answers)
        lines = [line for line in gateway.log.lines if "kept the" in line]
        assert "bad: GRAPHQL_VALIDATION_FAILED: Cannot query field 'nope'" in lines[0]
        assert "cannot be read: No such file or directory" in lines[1]


def test_sighup_reaches_every_worker(tmp_path: Path, upstream: FakeUpstream) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({_sha(CATEGORIES): CATEGORIES}))
    with serving(tmp_path, upstream, 2, "--trusted-documents", str(manifest)) as gateway:
        workers = _workers(gateway.process.pid)
        assert len(workers) == 2
        with _steady_client(gateway) as answers:
            manifest.write_text(json.dumps({_sha(CATEGORIES): CATEGORIES, "o": OTHER}))
            os.kill(gateway.process.pid, signal.SIGHUP)  # to the parent, as an operator would
            gateway.log.wait_for("trusted documents: 2 read from", 2)
        assert _workers(gateway.process.pid) == workers  # read again, not restarted
        assert answers
        assert all(response.status_code == 200 for response in answers)
        # Each worker in turn answers alone (frozen a few seconds, uvicorn would replace one).
        for stopped in workers:
            with frozen(stopped):
                assert _data(gateway.post({"documentId": "o"})) == {"__typename": "Query"}
