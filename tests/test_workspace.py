"""Agents on the user's project, against the real engine and real git: seeding (HEAD, another ref,
uncommitted changes), the agent's diff and changes, fetch, merge, apply, copy in and out, published
ports, a re-created agent keeping its workspace, and replay of a run on a seeded agent.

The user's repository is sacred: every refused or failed operation is checked to leave the working
tree, the index, HEAD and the branch byte for byte as they were."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from claude_lab import ConfigError, Lab, LabError, MergeConflict, NotFound
from claude_lab.naming import network_name

from support import git, git_project, poll


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return git_project(path, {"README.md": "# toy\n", "src/app.py": "def hello():\n    return 'hello'\n",
                              "notes.txt": "one\ntwo\nthree\n", ".gitignore": "*.log\n"})


def state(repo: Path) -> str:
    """A digest of everything the user owns: every file of the work tree, the index, HEAD and the refs."""
    h = hashlib.sha256()
    for f in sorted(p for p in repo.rglob("*") if p.is_file() and "objects" not in p.relative_to(repo).parts
                    and p.name not in ("FETCH_HEAD", "ORIG_HEAD")
                    and not p.relative_to(repo).as_posix().startswith((".git/refs/heads/claude-lab", ".git/logs"))):
        h.update(f.relative_to(repo).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def project(lab: Lab) -> Path:
    return make_repo(lab.config.project_dir)


def sh(lab: Lab, agent: str, command: str) -> str:
    return lab.exec(agent, command).check().stdout


def test_seed_at_head_then_diff_and_changes(lab: Lab, project: Path):
    head = git(project, "rev-parse", "HEAD").strip()
    before = state(project)
    lab.create_agent("a1", progress=False)  # a git project: seeded from it by default
    assert sh(lab, "a1", "cat /workspace/src/app.py") == (project / "src" / "app.py").read_text()
    assert sh(lab, "a1", "git -C /workspace branch --show-current").strip() == "claude-lab/a1"
    assert sh(lab, "a1", "git -C /workspace rev-parse HEAD").strip() == head
    assert sh(lab, "a1", "git -C /workspace log --oneline | wc -l").strip() == "1"
    assert state(project) == before
    sh(lab, "a1", "cd /workspace && printf 'one\\n2\\nthree\\nfour\\n' > notes.txt && git commit -qam edit"
                  " && printf 'new\\n' > new.txt && rm README.md && printf 'a\\000b\\001' > blob.bin")
    diff = lab.diff("a1")
    assert "+2\n" in diff and "-two\n" in diff and "+four\n" in diff and "+new\n" in diff
    assert "Binary files /dev/null and b/blob.bin differ" in diff and "deleted file mode" in diff
    changes = lab.changes("a1").set_index("path")
    assert changes.loc["notes.txt", "status"] == "M" and changes.loc["notes.txt", "added"] == 2
    assert changes.loc["notes.txt", "deleted"] == 1
    assert changes.loc["new.txt", "status"] == "A" and changes.loc["README.md", "status"] == "D"
    assert changes.loc["blob.bin", "added"] is pd_na()
    assert sh(lab, "a1", "git -C /workspace status --porcelain")  # diff/changes left the agent's index alone


def pd_na():
    import pandas as pd

    return pd.NA


def test_seed_at_another_ref_and_with_uncommitted_changes(lab: Lab, project: Path):
    git(project, "tag", "v1")
    (project / "notes.txt").write_text("later\n")
    git(project, "commit", "-q", "-am", "later")
    lab.create_agent("old", ref="v1", progress=False)
    assert sh(lab, "old", "cat /workspace/notes.txt") == "one\ntwo\nthree\n"

    (project / "src" / "app.py").write_text("def hello():\n    return 'hi'\n")  # modified, unstaged
    (project / "draft.py").write_text("x = 1\n")  # untracked, not ignored
    (project / "debug.log").write_text("noise\n")  # ignored
    git(project, "add", "draft.py")  # and one staged
    before = state(project)
    lab.create_agent("wip", include_uncommitted=True, progress=False)
    assert state(project) == before  # the user's index and work tree were only read
    assert "return 'hi'" in sh(lab, "wip", "cat /workspace/src/app.py")
    assert sh(lab, "wip", "cat /workspace/draft.py") == "x = 1\n"
    assert lab.exec("wip", "test -e /workspace/debug.log").exit_code == 1
    log = sh(lab, "wip", "git -C /workspace log --format=%s")
    assert log.splitlines()[:2] == ["claude-lab: uncommitted changes of the project", "later"]
    assert lab.diff("wip") == ""  # the agent has done nothing yet: its base holds the uncommitted work


def test_fetch_and_merge_next_to_unrelated_uncommitted_changes(lab: Lab, project: Path):
    lab.create_agent("a1", progress=False)
    sh(lab, "a1", "cd /workspace && printf 'def health():\\n    return 200\\n' > src/health.py && git add -A"
                  " && git commit -qm health && printf 'one\\ntwo\\nthree\\nfour\\n' > notes.txt")
    (project / "README.md").write_text("# toy, edited by me\n")  # the user's own work in progress
    before = state(project)
    assert lab.fetch("a1") == "claude-lab/a1"
    assert state(project) == before  # refs only
    assert git(project, "log", "-1", "--format=%s", "claude-lab/a1").strip() == "claude-lab: uncommitted work of agent a1"
    assert git(project, "show", "claude-lab/a1:src/health.py").startswith("def health")
    result = lab.merge("a1")
    assert result.branch == "claude-lab/a1" and result.into == "main"
    assert sorted(result.files) == ["notes.txt", "src/health.py"]
    assert git(project, "rev-parse", "HEAD").strip() == result.commit
    assert (project / "src" / "health.py").read_text().startswith("def health")
    assert (project / "README.md").read_text() == "# toy, edited by me\n"  # untouched, still uncommitted
    assert git(project, "status", "--porcelain").strip() == "M README.md"
    assert lab.merge("a1").commit == result.commit  # again: nothing new to merge


def test_merge_refused_on_overlap_and_aborted_on_conflict_changing_nothing(lab: Lab, project: Path):
    lab.create_agent("a1", progress=False)
    sh(lab, "a1", "cd /workspace && printf 'one\\nTWO by the agent\\nthree\\n' > notes.txt && git commit -qam agent")
    (project / "notes.txt").write_text("one\ntwo\nthree\nmine\n")  # uncommitted, in the same file
    before = state(project)
    with pytest.raises(MergeConflict, match="uncommitted changes touch notes.txt") as refused:
        lab.merge("a1")
    assert refused.value.files == ["notes.txt"]
    assert state(project) == before
    with pytest.raises(MergeConflict):
        lab.apply("a1")
    assert state(project) == before

    (project / "notes.txt").write_text("one\nTWO by me\nthree\n")
    git(project, "commit", "-q", "-am", "mine")  # a real conflict now
    before = state(project)
    with pytest.raises(MergeConflict, match=r"conflicts with your main in notes.txt.*git merge claude-lab/a1"):
        lab.merge("a1")
    assert state(project) == before
    assert not (project / ".git" / "MERGE_HEAD").exists()

    git(project, "checkout", "-q", "--detach")
    before = state(project)
    with pytest.raises(LabError, match="HEAD is detached"):
        lab.merge("a1")
    assert state(project) == before


def test_apply_leaves_the_changes_uncommitted(lab: Lab, project: Path):
    lab.create_agent("a1", progress=False)
    sh(lab, "a1", "cd /workspace && printf 'x\\n' > added.txt && printf 'one\\ntwo\\n' > notes.txt")
    head = git(project, "rev-parse", "HEAD").strip()
    assert sorted(lab.apply("a1")) == ["added.txt", "notes.txt"]
    assert git(project, "rev-parse", "HEAD").strip() == head
    assert git(project, "diff", "--cached", "--name-only") == ""  # the index is as it was
    assert (project / "added.txt").read_text() == "x\n" and (project / "notes.txt").read_text() == "one\ntwo\n"
    assert sorted(git(project, "status", "--porcelain").split("\n")[:-1]) == [" M notes.txt", "?? added.txt"]


def test_bad_input_is_refused_clearly(lab_factory, tmp_path):
    plain = lab_factory()  # its project folder is not a repository
    plain.create_agent("empty", progress=False)  # the default there: an empty workspace
    assert plain.exec("empty", "ls -A /workspace").stdout == ""
    with pytest.raises(ConfigError, match="not a git repository.*git init.*source=None"):
        plain.create_agent("seeded", source="project", progress=False)
    assert [a.id for a in plain.agents()] == ["empty"]  # nothing half-made
    with pytest.raises(LabError, match="not seeded"):
        plain.diff("empty")
    with pytest.raises(NotFound):
        plain.diff("nobody")
    repo = make_repo(tmp_path / "other")
    with pytest.raises(ConfigError, match="ref 'nope' is not a commit"):
        plain.create_agent("bad-ref", source=str(repo), ref="nope", progress=False)
    with pytest.raises(LabError, match="ref=.*only with a source"):
        plain.create_agent("ref-alone", source=None, ref="main", progress=False)
    assert [a.id for a in plain.agents()] == ["empty"]


def test_another_repository_and_a_url_are_cloned_on_the_host(lab: Lab, tmp_path: Path):
    other = make_repo(tmp_path / "other")
    lab.create_agent("path", source=str(other), progress=False)
    assert sh(lab, "path", "cat /workspace/README.md") == "# toy\n"
    lab.create_agent("url", source=f"file://{other}", progress=False)
    assert sh(lab, "url", "git -C /workspace log --format=%s") == "start\n"
    with pytest.raises(LabError, match="not from the project"):
        lab.merge("path")


def test_copy_to_and_from_both_ways_and_traversal_refused(lab: Lab, tmp_path: Path):
    lab.create_agent("a1", source=None, progress=False)
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "x.txt").write_text("x\n")
    (src / "top.txt").write_text("top\n")
    assert lab.copy_to("a1", src, "/workspace") == "/workspace/data"
    assert sh(lab, "a1", "stat -c '%u %n' /workspace/data /workspace/data/sub/x.txt").split() == \
        ["1000", "/workspace/data", "1000", "/workspace/data/sub/x.txt"]
    assert lab.copy_to("a1", src / "top.txt", "/workspace/renamed.txt") == "/workspace/renamed.txt"
    assert sh(lab, "a1", "cat /workspace/renamed.txt") == "top\n"
    sh(lab, "a1", "mkdir -p /workspace/out && echo made > /workspace/out/result.txt")
    got = lab.copy_from("a1", "/workspace/out", tmp_path)
    assert got == tmp_path / "out" and (got / "result.txt").read_text() == "made\n"
    single = lab.copy_from("a1", "/workspace/out/result.txt", tmp_path / "single.txt")
    assert single.read_text() == "made\n"
    with pytest.raises(LabError, match="exists already"):
        lab.copy_from("a1", "/workspace/out", tmp_path)

    sh(lab, "a1", "mkdir -p /workspace/evil && ln -s /etc/passwd /workspace/evil/link && ln -s ../../../../x "
                  "/workspace/evil/up && echo fine > /workspace/evil/ok.txt")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(LabError, match="refused to copy.*nothing was written"):
        lab.copy_from("a1", "/workspace/evil", dest)
    assert list(dest.iterdir()) == []
    with pytest.raises(NotFound):
        lab.copy_from("a1", "/workspace/missing", dest)


def test_a_published_port_lets_the_host_in_and_never_the_agent_out(lab: Lab):
    lab.up(progress=False)
    lab.create_agent("web", source=None, ports=[8000], progress=False)
    lab.exec("web", "cd /workspace && echo served > index.html && "
                    "(nohup python3 -m http.server 8000 >/dev/null 2>&1 &)").check()
    url = lab.url("web", 8000)
    assert url.startswith("http://127.0.0.1:")
    body = poll(lambda: _get(url + "/index.html"), timeout=20)
    assert body == "served\n"
    row = lab.status().set_index("agent").loc["web"]
    assert "->8000/tcp" in row["ports"] and url.rsplit(":", 1)[1] in row["ports"]
    assert lab.egress("web").ok
    gateway = lab.engine.network_gateway(network_name(lab.name))
    port = url.rsplit(":", 1)[1]
    probe = lab.exec("web", f"python3 -c \"import socket; socket.create_connection(('{gateway}', {port}), 3)\"")
    assert probe.exit_code != 0  # the agent cannot reach the host, not even its own published port there
    with pytest.raises(NotFound, match="does not publish port 9000"):
        lab.url("web", 9000)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
            return resp.read().decode()
    except OSError:
        return None


def test_a_recreated_agent_keeps_its_workspace(lab: Lab, project: Path):
    lab.create_agent("a1", progress=False)
    sh(lab, "a1", "echo work > /workspace/mine.txt")
    lab.remove_agent("a1")  # the workspace volume stays
    (project / "README.md").write_text("# changed since\n")
    git(project, "commit", "-q", "-am", "later")
    with pytest.warns(UserWarning, match="keeps its workspace"):
        lab.create_agent("a1", progress=False)
    assert sh(lab, "a1", "cat /workspace/mine.txt") == "work\n"
    assert sh(lab, "a1", "cat /workspace/README.md") == "# toy\n"  # not re-seeded
    assert "+work" in lab.diff("a1")  # its base is still the commit it was first seeded from


def test_replay_of_a_run_on_a_seeded_agent(lab: Lab, project: Path):
    (project / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB of history, stored once
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "big")
    lab.create_agent("a1", progress=False)
    first = lab.shell("a1", "printf 'one\\ntwo\\nthree\\nfour\\n' > notes.txt")
    second = lab.shell("a1", "printf 'x\\n' > x.txt")
    assert first.status == second.status == "success"
    store = lab.run_store
    seeds = store.seeds(lab.name)
    assert len(seeds) == 1 and seeds[0]["commit"] == git(project, "rev-parse", "HEAD").strip()
    for run in (first, second):
        assert len(store.artifact(run.run_id, "workspace.bundle") or b"") < 100_000  # not the whole history
    again = lab.replay(second.run_id)
    assert again.reproduced is True and again.diff == second.diff


def cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "claude_lab.cli", "-C", str(lab.config.project_dir), "-n", lab.name,
                           *args], capture_output=True, text=True, timeout=300)


def test_the_round_trip_from_the_command_line(lab: Lab, project: Path, tmp_path: Path):
    made = cli(lab, "--json", "create", "c1", "--port", "8000")
    assert made.returncode == 0, made.stderr
    facts = json.loads(made.stdout)
    assert facts["source"] == "project" and facts["base"] == git(project, "rev-parse", "HEAD").strip()
    (tmp_path / "in.txt").write_text("from the host\n")
    assert cli(lab, "cp", str(tmp_path / "in.txt"), "c1:/workspace/in.txt").returncode == 0
    assert sh(lab, "c1", "cat /workspace/in.txt") == "from the host\n"
    shown = cli(lab, "diff", "c1")
    assert shown.returncode == 0 and "+from the host" in shown.stdout
    table = json.loads(cli(lab, "--json", "changes", "c1").stdout)
    assert table == [{"path": "in.txt", "status": "A", "added": 1, "deleted": 0}]
    assert cli(lab, "url", "c1", "8000").stdout.startswith("http://127.0.0.1:")
    (project / "in.txt").write_text("mine\n")  # the user's own untracked file in the way
    refused = cli(lab, "--json", "merge", "c1")
    assert refused.returncode == 10 and json.loads(refused.stdout)["files"] == ["in.txt"]
    (project / "in.txt").unlink()
    merged = cli(lab, "merge", "c1")
    assert merged.returncode == 0 and "merged claude-lab/c1 into main" in merged.stdout
    assert (project / "in.txt").read_text() == "from the host\n"
    out = tmp_path / "out"
    out.mkdir()
    assert cli(lab, "cp", "c1:/workspace/src", str(out)).returncode == 0
    assert (out / "src" / "app.py").read_text().startswith("def hello")
    bad = cli(lab, "cp", str(tmp_path / "in.txt"), str(out))
    assert bad.returncode == 1 and "exactly one side" in bad.stderr
