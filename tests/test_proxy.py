"""The lab's model proxy as a credential boundary, on loopback: what it serves, what it refuses, what it writes."""
from __future__ import annotations

import uuid

import pytest
import requests

from claude_lab import ScriptedModel
from claude_lab.model.grants import BEARER, HELLO_PATH, TOKEN_PREFIX, Credential
from claude_lab.model.proxy import ModelProxy

BODY = {"model": "m", "max_tokens": 10, "tools": [{"name": "Bash"}], "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def upstream():
    key = f"sk-ant-api03-{uuid.uuid4().hex}"
    model = ScriptedModel(["hello"], api_key=key).start()
    yield model, key
    model.stop()


@pytest.fixture
def proxy():
    p = ModelProxy("127.0.0.1").start()
    yield p
    p.stop()


def post(proxy: ModelProxy, headers: dict[str, str]) -> requests.Response:
    return requests.post(proxy.url + "/v1/messages", json=BODY, headers=headers, timeout=10)


def hello(proxy: ModelProxy, token: str) -> requests.Response:
    return requests.get(proxy.url + HELLO_PATH, headers={"x-api-key": token}, timeout=10)


def refused(resp: requests.Response) -> str:
    assert resp.status_code == 401
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    return body["error"]["message"]


def test_a_bound_live_token_is_served_with_the_real_key_written_in(proxy, upstream):
    model, key = upstream
    grant = proxy.grant("run-1", "agent-1", upstream=model.url, credential=Credential(key),
                        expected_peers={"127.0.0.1"})
    assert grant.token.startswith(TOKEN_PREFIX) and len(grant.token) - len(TOKEN_PREFIX) >= 32  # 192 bits
    assert grant.token not in repr(grant) and key not in repr(grant)
    assert hello(proxy, grant.token).json()["peer"] == "127.0.0.1"
    resp = post(proxy, {"x-api-key": grant.token})
    assert resp.status_code == 200 and resp.json()["content"][0]["text"] == "hello"
    assert [r.key_ok for r in model.requests] == [True]
    assert grant.env() == {"ANTHROPIC_API_KEY": grant.token, "ANTHROPIC_BASE_URL": proxy.url}


def test_everything_else_is_refused_with_the_api_s_401_and_counted(proxy, upstream):
    model, key = upstream
    grant = proxy.grant("run-1", "agent-1", upstream=model.url, credential=Credential(key))
    assert "no token" in refused(post(proxy, {}))
    assert "unknown token" in refused(post(proxy, {"x-api-key": TOKEN_PREFIX + uuid.uuid4().hex}))
    assert "unknown token" in refused(post(proxy, {"x-api-key": key}))  # the real key is no token either
    assert "not started" in refused(post(proxy, {"x-api-key": grant.token}))  # before the run's set-up bound it
    # Bound to one address, refused from another (here: bound to an address this test never calls from).
    other = proxy.grant("run-2", "agent-2", upstream=model.url, credential=Credential(key),
                        expected_peers={"10.255.255.1"})
    assert "not its address" in refused(hello(proxy, other.token))
    assert hello(proxy, grant.token).ok
    grant.revoke()
    assert "has ended" in refused(post(proxy, {"authorization": f"Bearer {grant.token}"}))
    assert proxy.refusals == {"no-token": 1, "unknown-token": 2, "not-bound": 1, "wrong-peer": 1, "revoked": 1}
    assert model.requests == []  # nothing refused ever reached the upstream


def test_bearer_credentials_for_gateways(proxy, upstream):
    model, key = upstream
    grant = proxy.grant("run-1", "agent-1", upstream=model.url, credential=Credential(key, BEARER))
    assert set(grant.env()) == {"ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"}
    hello(proxy, grant.token)
    assert post(proxy, {"authorization": f"Bearer {grant.token}"}).status_code == 200
    (req,) = model.requests
    assert req.key_ok and "authorization" in req.headers and "x-api-key" not in req.headers


def test_an_upstream_401_reaches_the_client_as_it_came(proxy):
    model = ScriptedModel(["never"], api_key="sk-ant-api03-right").start()
    try:
        grant = proxy.grant("run-1", "agent-1", upstream=model.url, credential=Credential("sk-ant-api03-wrong"))
        hello(proxy, grant.token)
        message = refused(post(proxy, {"x-api-key": grant.token}))
    finally:
        model.stop()
    assert message == "invalid x-api-key"  # the upstream's own words, not the proxy's
    assert proxy.refusals == {}
