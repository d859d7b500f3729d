"""Credentials stay home (SPEC §7): a link to another host or port - a Graph nextLink or stored deltaLink,
an Assets import link - is refused before any request, with an error naming the host. The "foreign host" is
a second loopback server that records what reaches it: it must receive nothing."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from sandbox.http import serve
from shared.admin.setup import run_setup
from shared.app import assets_client, open_backend, sync_full, sync_incremental
from shared.contract.checkpoints import USERS_DELTA
from shared.errors import ForeignLink
from shared.settings import load_settings


class Recorder:
    """A host that answers 200 {} to anything and keeps what it received (method, path, headers)."""

    def __init__(self):
        self.received: list[tuple[str, str, dict]] = []
        self.server = serve(self)
        self.url = self.server.url
        self.host = urlsplit(self.url).netloc

    def __call__(self, environ, start_response):
        headers = {k[5:]: v for k, v in environ.items() if k.startswith("HTTP_")}
        self.received.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], headers))
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]


@pytest.fixture
def foreign():
    recorder = Recorder()
    yield recorder
    recorder.server.stop()


@pytest.fixture
def settings(box, tmp_path):
    return load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "home")})


def test_a_graph_next_link_to_another_port_is_refused(box, settings, foreign):
    run_setup(settings)
    box.graph.link_origin = foreign.url  # every nextLink and deltaLink points at the foreign host
    with pytest.raises(ForeignLink) as error:
        sync_full(settings)
    message = str(error.value)
    assert f"link to http://{foreign.host}, which is not GRAPH_BASE_URL's host http://127.0.0.1:" in message
    assert "Microsoft Graph" in message and "sandbox-graph-token" not in message
    assert foreign.received == []
    assert box.assets.executions == []  # the run stopped before queuing anything


def test_a_stored_delta_link_to_another_host_is_refused(box, settings, foreign):
    run_setup(settings)
    sync_full(settings)
    state = open_backend(settings).state
    link = urlsplit(state.checkpoint(USERS_DELTA))
    state.commit({}, {USERS_DELTA: urlunsplit(link._replace(netloc=foreign.host))})
    executions = len(box.assets.executions)
    with pytest.raises(ForeignLink) as error:
        sync_incremental(settings)
    assert foreign.host in str(error.value) and foreign.received == []
    assert len(box.assets.executions) == executions


def test_assets_import_links_to_another_host_get_no_token_and_no_mapping(box, settings, foreign):
    run_setup(settings)
    box.assets.reset_log()
    box.assets.link_origin = foreign.url
    with pytest.raises(ForeignLink) as error:
        run_setup(settings)  # would PATCH the whole schema-and-mapping document to the mapping link
    assert f"Assets returned a link to http://{foreign.host}, which is not ASSETS_API_URL's host" in str(error.value)
    assert "(the token is only sent to ASSETS_API_URL)" in str(error.value)
    with pytest.raises(ForeignLink):
        sync_full(settings)
    assert foreign.received == []
    assert [r.path for r in box.assets.requests] == ["/jsm/assets/v1/imports/info"] * 2  # only the entry point


def test_execution_links_to_another_host_are_refused(box, settings, foreign):
    run_setup(settings)
    client = assets_client(settings)
    client.links()  # the import source's links as usual
    box.assets.link_origin = foreign.url  # the execution's links point elsewhere
    execution = client.start()
    with pytest.raises(ForeignLink):
        client.submit(execution, {"users": []}, "chunk-00001", completed=True)
    with pytest.raises(ForeignLink):
        client.execution_status(execution)
    client.cancel(execution)  # best effort: logged, and not sent either
    assert foreign.received == []


def test_jira_credentials_go_only_to_the_jira_site_and_the_assets_api(tmp_path, foreign):
    from sandbox.emulators import start_sandbox
    from shared.clients.jira import atlassian_call, jira_client
    from shared.jira_links import object_api

    box = start_sandbox(users=20, seed=3, jira=True)
    try:
        settings = load_settings({**box.settings(), "ENTRA_ASSETS_HOME": str(tmp_path / "h")})
        run_setup(settings)
        api = object_api(settings)  # the site's transport, now bound to JIRA_SITE_URL and ASSETS_API_URL
        assert api.schemas()  # both allowed origins work
        for url in (f"{foreign.url}/rest/api/3/myself", f"{foreign.url}/jsm/assets/workspace/x/v1/object/aql"):
            with pytest.raises(ForeignLink) as error:
                atlassian_call(api.transport, api.bucket, api._auth, "GET", url, what="test", forbidden="")
        assert "which is not JIRA_SITE_URL's host" in str(error.value) and "or ASSETS_API_URL's host" in str(error.value)
        site = jira_client(settings, httpx.Client())
        with pytest.raises(ForeignLink):
            atlassian_call(site.transport, site.bucket, site._auth, "GET", f"{foreign.url}/x", what="t", forbidden="")
        assert foreign.received == []
    finally:
        box.stop()
