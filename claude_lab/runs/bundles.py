"""A run as a portable file: one tar (optionally gzipped) with its record, cassette, diff and artifacts,
read back into any project's run store. Nothing is extracted to disk on import."""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

from .._version import __version__
from ..errors import LabError
from ..model.proxy import Exchange
from .store import RUN_FIELDS, RunStore, now_iso

BUNDLE_FORMAT = "claude-lab-run"
BUNDLE_VERSION = 1


def export_run(store: RunStore, run_id: str, path: str | os.PathLike) -> Path:
    """Write one run (record, cassette, artifacts) as a tar file; `.tar.gz`/`.tgz` compresses it."""
    rec = store.record(run_id)
    target = Path(path).expanduser()
    if target.is_dir():
        target = target / f"{run_id}.tar"
    mode = "w:gz" if target.name.endswith((".gz", ".tgz")) else "w"
    members: list[tuple[str, bytes]] = [
        ("manifest.json", json.dumps({"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "run_id": run_id,
                                      "exported_at": now_iso(), "claude_lab_version": __version__}).encode()),
        ("run.json", json.dumps(rec, ensure_ascii=False, indent=1, default=str).encode()),
        ("cassette.jsonl", "".join(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n"
                                   for ex in store.exchanges(run_id)).encode()),
        ("diff.patch", (rec.get("diff") or "").encode()),
    ]
    members += [(f"artifacts/{name}", store.artifact(run_id, name) or b"") for name in store.artifact_names(run_id)]
    seed_commit = (store.artifact(run_id, "workspace.seed") or b"").decode()
    seed = store.seed(rec.get("lab") or "", seed_commit) if seed_commit else None
    if seed is not None:  # the seeded workspace's base travels with the run
        members.append(("seed.bundle", seed))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(f"{run_id}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    partial.replace(target)
    return target

def import_run(store: RunStore, path: str | os.PathLike) -> str:
    """Read a bundle written by `export_run` into this store; returns the run id."""
    source = Path(path).expanduser()
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar.getmembers():
                if member.isfile():  # read in memory only: nothing is extracted to disk
                    handle = tar.extractfile(member)
                    if handle is not None:
                        files[member.name.split("/", 1)[-1]] = handle.read()
    except (OSError, tarfile.TarError) as exc:
        raise LabError(f"{source} is not a run bundle that can be read: {exc}") from exc
    try:
        manifest = json.loads(files["manifest.json"])
        rec = json.loads(files["run.json"])
    except (KeyError, ValueError):
        raise LabError(f"{source} is not a claude-lab run bundle (no manifest.json/run.json); "
                       f"make one with lab.export_run(run_id, path)") from None
    if manifest.get("format") != BUNDLE_FORMAT or int(manifest.get("version") or 0) > BUNDLE_VERSION:
        raise LabError(f"{source} is a {manifest.get('format')!r} bundle of version {manifest.get('version')}; "
                       f"this claude-lab reads {BUNDLE_FORMAT!r} up to version {BUNDLE_VERSION}")
    row = {k: rec.get(k) for k in RUN_FIELDS if k in rec}
    if row.get("status") == "running":  # its owner is on another machine, or gone
        row["status"] = "interrupted"
    exchanges = [Exchange.from_dict(json.loads(line))
                 for line in files.get("cassette.jsonl", b"").decode("utf-8").splitlines() if line.strip()]
    artifacts = {name.split("/", 1)[1]: data for name, data in files.items() if name.startswith("artifacts/")}
    store.insert_run(row, exchanges, artifacts)
    seed_commit = artifacts.get("workspace.seed", b"").decode()
    if seed_commit and "seed.bundle" in files:
        store.put_seed(row.get("lab") or "", seed_commit, files["seed.bundle"])
    return row["run_id"]
