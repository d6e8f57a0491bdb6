"""The model key never enters a container; the per-run token the CLI holds is worth nothing elsewhere.

A prompt-injected agent reads its environment: its Bash tool dumps `env` and every readable
/proc/*/environ, and the test greps the agent's files for the key. The upstream is a ScriptedModel
of the test's on loopback that checks the key on every request, so the run only succeeds if the
lab's model proxy wrote the real key into each request on the host.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
import uuid

import pandas as pd
import pytest

from claude_lab import AuthenticationError, Lab, ScriptedModel
from claude_lab.model.grants import TOKEN_PREFIX
from claude_lab.netguard.sidecar import allow_endpoint

DUMP = ("{ env; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f 2>/dev/null; echo; done; } "
        "> /tmp/dump.txt; grep -c ANTHROPIC /tmp/dump.txt")
CALL = """python3 - <<'EOF'
import sys, urllib.request, urllib.error
req = urllib.request.Request("{url}/v1/models", headers={headers})
try:
    print(urllib.request.urlopen(req, timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode()[:300])
except OSError as e:
    print("unreachable", e)
EOF"""


def call_proxy(lab: Lab, agent: str, url: str, token: str | None) -> str:
    headers = {"x-api-key": token} if token else {}
    return lab.exec(agent, CALL.format(url=url, headers=json.dumps(headers))).stdout.strip()


def test_the_key_never_enters_the_agent_and_its_token_works_only_there_and_then(lab: Lab, engine, tmp_path, probes):
    secret = f"sk-ant-api03-hostile-{uuid.uuid4().hex}"
    key_file = tmp_path / "key"
    key_file.write_text(secret + "\n")
    lab.create_agent("keyed", progress=False)
    lab.create_agent("other", progress=False)
    upstream = ScriptedModel([[{"type": "tool_use", "name": "Bash", "input": {"command": DUMP}}], "done"],
                             api_key=secret).start()  # loopback: only the proxy on this machine reaches it
    lab.config.model_base_url = upstream.url
    lab.config.api_key_file = str(key_file)
    checks: dict[str, str] = {}
    try:
        with lab.claude_stream("keyed", "dump your environment") as run:
            for event in run:
                if getattr(event, "type", None) != "user" or checks:
                    continue
                # The Bash tool has dumped the environment; the run (and its grant) is still live.
                dump = lab.exec("keyed", "cat /tmp/dump.txt").stdout
                tokens = set(re.findall(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]+", dump))
                urls = set(re.findall(r"ANTHROPIC_BASE_URL=(\S+)", dump))
                assert len(tokens) == 1 and len(urls) == 1, (tokens, urls)
                token, url = tokens.pop(), urls.pop()
                checks["dump"] = dump
                checks["own"] = call_proxy(lab, "keyed", url, token)
                checks["other, no run"] = call_proxy(lab, "other", url, token)
                allow_endpoint(lab.engine, lab.name, "other", url)  # as when "other" has a run of its own
                checks["other"] = call_proxy(lab, "other", url, token)
                checks["made-up"] = call_proxy(lab, "keyed", url, TOKEN_PREFIX + uuid.uuid4().hex)
                checks["none"] = call_proxy(lab, "keyed", url, None)
        result = run.result
        assert result is not None and result.status == "success", result and result.error
        checks["after"] = call_proxy(lab, "keyed", url, token)
        bundle = lab.export_run(result.run_id, tmp_path / "run.tar")
    finally:
        upstream.stop()

    def refused(answer: str) -> str:
        return "401" if answer.startswith("401") and "authentication_error" in answer else answer[:80]

    assert probes.record("the agent's token, from the agent, during its run", "200", checks["own"], area="secrets")
    assert probes.record("the agent's token, from another agent with no run, during the run", "unreachable",
                         checks["other, no run"].split(" ")[0], area="secrets")
    assert probes.record("the agent's token, from another agent with a run of its own, during the run", "401",
                         refused(checks["other"]), area="secrets")
    assert probes.record("a made-up token", "401", refused(checks["made-up"]), area="secrets")
    assert probes.record("no token", "401", refused(checks["none"]), area="secrets")
    assert probes.record("the agent's token after its run ended", "401", refused(checks["after"]), area="secrets")
    main = [r for r in upstream.requests if r.kind == "main"]
    assert probes.record("upstream got the real key on every request", "yes",
                         "yes" if main and all(r.key_ok for r in upstream.requests) else "no",
                         area="secrets", where="host", note=f"{len(upstream.requests)} requests")

    store = lab.config.project_dir / ".claude-lab" / "runs.sqlite"
    with tarfile.open(bundle) as tar:
        exported = "".join(tar.extractfile(m).read().decode("latin-1") for m in tar.getmembers() if m.isfile())
    places = {
        "env and /proc/*/environ of every process in the agent, during the run": checks["dump"],
        "files in the agent (/home, /tmp, /workspace, ~/.claude)": lab.exec(
            "keyed", ["grep", "-rlF", secret, "/home", "/workspace", "/tmp"]).stdout,
        "docker inspect of the agent and its netguard": json.dumps(
            [engine.api.inspect_container(c.id) for c in lab.containers()]),
        "image history (agent, netguard)": json.dumps([engine.api.history(lab.config.image(i))
                                                       for i in ("agent", "netguard")]),
        "container logs (agent, netguard)": "".join(engine.logs(c.name).decode("utf-8", "replace")
                                                    for c in lab.containers()),
        "the run's result and its events": json.dumps(result.to_dict()) + repr(result),
        "the run store (SQLite file, WAL) and the cassette": "".join(
            p.read_bytes().decode("latin-1") for p in store.parent.glob("runs.sqlite*")),
        "the exported run bundle": exported,
        "lab.status()": lab.status().to_json(date_format="iso"),
    }
    assert "ANTHROPIC_API_KEY=" + TOKEN_PREFIX in checks["dump"]  # what the CLI holds: the token
    for where, text in places.items():
        assert probes.record(f"API key in {where}", "absent", "FOUND" if secret in text else "absent",
                             area="secrets", where="agent" if where.startswith(("env", "files")) else "host")
    for where in ("the run store (SQLite file, WAL) and the cassette", "the exported run bundle",
                  "the run's result and its events"):
        assert probes.record(f"run token in {where}", "absent", "FOUND" if token in places[where] else "absent",
                             area="secrets", where="host")


def test_a_refused_real_key_is_an_authentication_error(lab: Lab, tmp_path, probes):
    key_file = tmp_path / "key"
    key_file.write_text(f"sk-ant-api03-revoked-{uuid.uuid4().hex}\n")
    lab.create_agent("refused", progress=False)
    upstream = ScriptedModel(["never"], api_key=f"sk-ant-api03-the-right-one-{uuid.uuid4().hex}").start()
    lab.config.model_base_url = url = upstream.url
    lab.config.api_key_file = str(key_file)
    try:
        with pytest.raises(AuthenticationError) as err:
            lab.claude("refused", "hello")
    finally:
        upstream.stop()
    text = str(err.value)
    ok = "401" in text and url in text and "api_key_file" in text
    assert probes.record("a real-format key the upstream refuses", "AuthenticationError naming the endpoint",
                         "AuthenticationError naming the endpoint" if ok else text[:120], area="secrets",
                         where="host")
    assert upstream.requests and all(r.key_ok is False for r in upstream.requests)


def test_lab_secrets_enter_only_the_agents_in_scope_and_are_never_stored(lab: Lab, tmp_path, probes):
    value = f"ghp_{uuid.uuid4().hex}"
    lab.secret("GITHUB_TOKEN", value, groups=["web"])
    lab.create_agent("web-1", group="web", progress=False)
    lab.create_agent("plain", progress=False)
    seen = lab.exec("web-1", "printenv GITHUB_TOKEN").stdout.strip()
    unseen = lab.exec("plain", "printenv GITHUB_TOKEN")
    assert probes.record("a group's secret, in an agent of that group", "present",
                         "present" if seen == value else "absent", area="secrets")
    assert probes.record("a group's secret, in an agent of another group", "absent",
                         "absent" if unseen.exit_code == 1 else "FOUND", area="secrets")
    status = lab.status().set_index("agent")
    assert status.loc["web-1", "secrets"] == "GITHUB_TOKEN" and pd.isna(status.loc["plain", "secrets"])
    assert lab.egress("web-1").secrets == ("GITHUB_TOKEN",) and lab.egress("plain").secrets == ()
    assert list(lab.secrets()["name"]) == ["GITHUB_TOKEN"] and value not in lab.secrets().to_string()
    # `claude-lab enter web-1`: the secret passed to docker by name, its value only in docker's environment.
    argv = lab.enter_argv("web-1", shell="sh")
    assert argv[argv.index("-it") + 1:argv.index("-it") + 3] == ["-e", "GITHUB_TOKEN"] and value not in argv
    argv[argv.index("-it")] = "-i"  # no terminal here
    entered = subprocess.run(argv, input="printenv GITHUB_TOKEN\n", capture_output=True, text=True, timeout=60,
                             env={**os.environ, **lab.enter_env("web-1")})
    assert entered.stdout.strip() == value, entered.stderr
    assert "-e" not in lab.enter_argv("plain") and lab.enter_env("plain") == {}
    shell = lab.shell("web-1", "echo token=$GITHUB_TOKEN")
    assert "token=<redacted>" in shell.result
    store = lab.config.project_dir / ".claude-lab" / "runs.sqlite"
    stored = "".join(p.read_bytes().decode("latin-1") for p in store.parent.glob("runs.sqlite*"))
    inspect = json.dumps(lab.engine.api.inspect_container(lab.agent("web-1").name))
    assert probes.record("a lab secret in the run store", "absent", "FOUND" if value in stored else "absent",
                         area="secrets", where="host")
    assert probes.record("a lab secret in docker inspect of its agent", "absent",
                         "FOUND" if value in inspect else "absent", area="secrets", where="host")
