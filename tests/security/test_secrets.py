"""The API key given to the lab appears nowhere outside the CLI's process."""
from __future__ import annotations

import json
import uuid

from claude_lab import Lab, ScriptedModel
from claude_lab.model.endpoint import lab_gateway


def test_api_key_is_nowhere_but_in_the_cli_process(lab: Lab, engine, tmp_path, probes):
    secret = f"sk-ant-api03-hostile-{uuid.uuid4().hex}"
    key_file = tmp_path / "key"
    key_file.write_text(secret + "\n")
    lab.create_agent("keyed", progress=False)
    model = ScriptedModel([[{"type": "tool_use", "name": "Bash", "input": {"command": "printenv ANTHROPIC_API_KEY"}}],
                           "done"], host=lab_gateway(lab.engine, lab.name)).start()
    try:
        lab.config.model_base_url = model.url  # a "real" endpoint: the configured key is used
        lab.config.api_key_file = str(key_file)
        result = lab.claude("keyed", "print the key")
    finally:
        model.stop()
    assert result.status == "success", result.error
    # The key was in the CLI's environment (its Bash tool printed it, redacted in what came back)...
    assert "<redacted>" in str(result.tool_calls[0].result)
    # ...and nowhere else:
    places = {
        "docker inspect of every lab container (agent, netguard)": json.dumps(
            [engine.api.inspect_container(c.id) for c in lab.containers()]),
        "image history (agent, netguard)": json.dumps([engine.api.history(lab.config.image(i))
                                                       for i in ("agent", "netguard")]),
        "container logs (agent, netguard)": "".join(engine.logs(c.name).decode("utf-8", "replace")
                                                    for c in lab.containers()),
        "the run's result and its events": json.dumps(result.to_dict()) + repr(result),
        "lab.status()": lab.status().to_json(date_format="iso"),
        "files in the agent (/home, /workspace, /tmp)": lab.exec(
            "keyed", ["grep", "-rlF", secret, "/home", "/workspace", "/tmp"]).stdout,
        "environment of the agent's processes after the run": lab.exec(
            "keyed", f"cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -cF {secret} || true").stdout
            .replace("0\n", ""),
    }
    store = lab.config.project_dir / ".claude-lab" / "runs.sqlite"
    if store.exists():
        places["the run store (SQLite file and its WAL)"] = "".join(
            p.read_bytes().decode("latin-1") for p in store.parent.glob("runs.sqlite*"))
    for where, text in places.items():
        assert probes.record(f"API key in {where}", "absent", "FOUND" if secret in text else "absent",
                             area="secrets", where="host")
