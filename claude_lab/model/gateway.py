"""The lab's model proxy on the lab network's gateway, one per gateway address and process, and a run's
grant on it.

The proxy binds the host's own address on the lab's bridge (or `model_host` on a swarm), which every
container of the lab reaches, group networks included (traffic to a host address goes through the
host's INPUT path, not the bridge-to-bridge forwarding that isolates groups). It serves every run of
every lab on that address from this process, in a daemon thread, and follows the lab network when it
is re-created on another subnet. Each run opens a grant on it and revokes it at its end.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Iterable

from ..errors import ModelUnreachable
from .endpoint import Endpoint, lab_gateway
from .proxy import ModelProxy, probe_upstream

if TYPE_CHECKING:
    from ..engine.face import EngineFace
    from .exchange import Exchange, Responder
    from .grants import Grant

_lock = threading.Lock()
_proxies: dict[str, ModelProxy] = {}  # gateway address -> the proxy serving there


def lab_proxy(engine: "EngineFace", lab: str) -> ModelProxy:
    """The model proxy on the lab network's gateway, started on first use."""
    host = lab_gateway(engine, lab)
    with _lock:
        proxy = _proxies.get(host)
        if proxy is None or not proxy.serving:
            proxy = _proxies[host] = ModelProxy(host).start()
        return proxy


def open_grant(engine: "EngineFace", lab: str, run_id: str, agent_id: str, endpoint: Endpoint, *,
               expected_peers: Iterable[str] | None, secrets: Iterable[str] = (),
               on_exchange: "Callable[[Exchange], None] | None" = None,
               respond: "Responder | None" = None) -> "Grant":
    """A run's grant: forwarded to the endpoint with its credential (probed from this machine first, so a dead
    endpoint fails in seconds rather than in the CLI's retry loop), or answered by `respond` (replay)."""
    if respond is None:
        problem = probe_upstream(endpoint.url)
        if problem:
            hint = "" if endpoint.scripted is not None else f". {endpoint.check_hint}"
            raise ModelUnreachable(f"the model endpoint {endpoint.url} ({endpoint.source}) cannot be reached from "
                                   f"this machine, where claude-lab's model proxy runs: {problem}{hint}")
    proxy = lab_proxy(engine, lab)
    return proxy.grant(run_id, agent_id, upstream=None if respond is not None else endpoint.url, respond=respond,
                       credential=endpoint.credential, secrets=secrets, expected_peers=expected_peers,
                       on_exchange=on_exchange)
