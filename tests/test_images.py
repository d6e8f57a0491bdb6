"""`ImageBuilder` on the real engine: content hashes, skipping unchanged images, failed builds, CA certs.

The big images are never rebuilt here: hash tests only compute hashes (on a copy of `images/`), and
the builds that do run use a unique `image_prefix` and are removed again, whatever happens.
"""
from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from claude_lab import BuildError, ConfigError, Lab, LabConfig
from claude_lab.engine import Engine
from claude_lab.images import BY_NAME, IMAGES, PACKAGE_IMAGES, BuildEvent, ImageBuilder
from claude_lab.naming import CONTENT_HASH

ALL = [spec.name for spec in IMAGES if not spec.optional]  # what a build without names builds
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CA_ENV = ("NODE_EXTRA_CA_CERTS", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "GIT_SSL_CAINFO")


# -- helpers --------------------------------------------------------------------------------------

def hashes(engine: Engine, cfg: LabConfig) -> dict[str, str]:
    builder = ImageBuilder(engine, cfg)  # a new builder: content_hash caches per instance
    return {spec.name: builder.content_hash(spec) for spec in IMAGES if not spec.optional}


def config(tmp_path: Path, **overrides) -> LabConfig:
    """Settings with nothing from files or the environment: only what the test gives."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    overrides.setdefault("ca_certs", [])
    return LabConfig(project_dir=project, name="pytest-images-hash", **overrides)


@pytest.fixture
def images_copy(tmp_path: Path) -> Path:
    target = tmp_path / "images"
    shutil.copytree(PACKAGE_IMAGES, target)
    return target


@pytest.fixture
def prefix(engine: Engine):
    """A unique image prefix; every `<prefix>/...` tag (and the image behind it) is removed afterwards."""
    value = f"pytest-img-{uuid.uuid4().hex[:10]}"
    yield value
    for image in engine.api.images():
        for tag in image.get("RepoTags") or []:
            if tag.startswith(f"{value}/"):
                engine.api.remove_image(tag, force=True)
    assert not [t for i in engine.api.images() for t in i.get("RepoTags") or [] if t.startswith(f"{value}/")]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def throwaway_ca(tmp_path_factory) -> dict[str, Path]:
    """A fresh self-signed CA and a leaf certificate it signed (PEM files)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a throwaway CA (cryptography is not installed)")
    d = tmp_path_factory.mktemp("ca")
    cn = f"claude-lab pytest throwaway CA {uuid.uuid4().hex[:8]}"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
            "-subj", "/CN=leaf.pytest.invalid", cwd=d)
    (d / "leaf.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=DNS:leaf.pytest.invalid\n")
    openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext", cwd=d)
    return {"ca": d / "ca.pem", "leaf": d / "leaf.pem"}


def run_in(engine: Engine, image: str, script: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `sh -c script` in a throwaway container of `image`; its exit code and output."""
    container = engine.api.create_container(image, command=["sh", "-c", script], environment=env,
                                            labels={"purpose": "pytest-images"})
    try:
        engine.api.start(container)
        code = engine.api.wait(container, timeout=120)["StatusCode"]
        return code, engine.api.logs(container, stdout=True, stderr=True).decode()
    finally:
        engine.api.remove_container(container, force=True)


# -- skipping what is up to date --------------------------------------------------------------------

def test_second_build_of_existing_images_builds_nothing(lab: Lab, engine: Engine):
    ids = {name: engine.image_id(lab.config.image(name)) for name in ALL}
    assert all(ids.values())
    events: list[BuildEvent] = []
    outcomes = lab.build(progress=events.append)
    assert [(o.image, o.tag, o.built) for o in outcomes] == [(n, lab.config.image(n), False) for n in ALL]
    for o in outcomes:
        assert engine.image_labels(o.tag)[CONTENT_HASH] == o.content_hash
    assert {e.kind for e in events} == {"skipped"} and [e.image for e in events] == ALL
    assert {name: engine.image_id(lab.config.image(name)) for name in ALL} == ids
    # One image brings its parents along, parents first; still nothing to build.
    assert [(o.image, o.built) for o in lab.build(["agent"], progress=False)] == [
        ("base", False), ("dev", False), ("agent", False)]


def test_the_agent_image_carries_one_claude_binary(lab: Lab):
    """npm installs Claude Code's native binary for glibc and for musl; the agent keeps only glibc's (-369 MB)."""
    lab.create_agent("probe", progress=False)
    found = lab.exec("probe", "ls /usr/local/lib/node_modules/@anthropic-ai/claude-code/node_modules/@anthropic-ai/; "
                              "claude --version").stdout.split()
    assert found[0] == "claude-code-linux-x64" and "claude-code-linux-x64-musl" not in found
    assert "(Claude Code)" in " ".join(found)


# -- content hashes -----------------------------------------------------------------------------

def test_hashes_depend_on_content_not_location(engine: Engine, tmp_path: Path, images_copy: Path):
    packaged = hashes(engine, config(tmp_path))
    assert hashes(engine, config(tmp_path, images_dir=images_copy)) == packaged
    assert len(set(packaged.values())) == len(ALL)
    # The prefix is part of a child's build args (its parent's tag), so it changes children only.
    other = hashes(engine, config(tmp_path, images_dir=images_copy, image_prefix="elsewhere"))
    assert other["base"] == packaged["base"]
    assert all(other[n] != packaged[n] for n in ALL if n != "base")


def test_one_byte_in_base_changes_every_hash(engine: Engine, tmp_path: Path, images_copy: Path):
    cfg = config(tmp_path, images_dir=images_copy)
    before = hashes(engine, cfg)
    dockerfile = images_copy / "base" / "Dockerfile"
    old = dockerfile.read_bytes()
    assert old.startswith(b"# claude-lab/base: Debian")
    new = old.replace(b"Debian", b"debian", 1)
    assert sum(a != b for a, b in zip(old, new)) == 1 and len(old) == len(new)
    dockerfile.write_bytes(new)
    after = hashes(engine, cfg)
    assert {n for n in ALL if after[n] != before[n]} == set(ALL)
    dockerfile.write_bytes(old)
    assert hashes(engine, cfg) == before


def test_changing_redis_changes_only_redis(engine: Engine, tmp_path: Path, images_copy: Path):
    cfg = config(tmp_path, images_dir=images_copy)
    before = hashes(engine, cfg)
    dockerfile = images_copy / "redis" / "Dockerfile"
    dockerfile.write_bytes(dockerfile.read_bytes().replace(b"redis-server for", b"redis-server  for", 1))
    changed = hashes(engine, cfg)
    assert {n for n in ALL if changed[n] != before[n]} == {"redis"}
    # A new file in the folder, and a file's executable bit, count too.
    (images_copy / "redis" / "redis.conf").write_text("save \"\"\n")
    with_file = hashes(engine, cfg)
    assert {n for n in ALL if with_file[n] != changed[n]} == {"redis"}
    (images_copy / "redis" / "redis.conf").chmod(0o755)
    executable = hashes(engine, cfg)
    assert {n for n in ALL if executable[n] != with_file[n]} == {"redis"}


def test_ca_certs_change_the_base_hash_and_so_every_child(engine: Engine, tmp_path: Path,
                                                          throwaway_ca: dict[str, Path]):
    certs = tmp_path / "certs"
    certs.mkdir()
    without = hashes(engine, config(tmp_path, ca_certs=[]))
    cfg = config(tmp_path, ca_certs=[str(certs)])
    assert hashes(engine, cfg) == without  # an empty folder adds nothing
    shutil.copyfile(throwaway_ca["ca"], certs / "proxy.crt")
    with_ca = hashes(engine, cfg)
    assert {n for n in ALL if with_ca[n] != without[n]} == set(ALL)
    (certs / "notes.txt").write_text("not a certificate, and not *.crt/*.pem: ignored\n")
    assert hashes(engine, cfg) == with_ca
    shutil.copyfile(throwaway_ca["leaf"], certs / "second.pem")
    assert hashes(engine, cfg)["base"] not in (with_ca["base"], without["base"])
    # The same certificate given as a file hashes like the folder holding only it.
    (certs / "second.pem").unlink()
    assert hashes(engine, config(tmp_path, ca_certs=[str(throwaway_ca["ca"])]))["base"] == with_ca["base"]


def test_ca_certs_that_are_missing_or_not_pem_raise_config_error(engine: Engine, tmp_path: Path,
                                                                 prefix: str):
    missing = tmp_path / "no-such-ca.crt"
    cfg = config(tmp_path, ca_certs=[str(missing)], image_prefix=prefix)
    with pytest.raises(ConfigError, match="no-such-ca.crt.*does not exist"):
        ImageBuilder(engine, cfg).content_hash(BY_NAME["base"])
    with pytest.raises(ConfigError, match="no-such-ca.crt"):
        ImageBuilder(engine, cfg).build(["redis"])  # via the parent, before anything is built
    assert engine.image_id(cfg.image("base")) is None

    not_pem = tmp_path / "not-a-cert.crt"
    not_pem.write_text("hello, I am not a certificate\n")
    for entry in (not_pem, tmp_path):  # the file itself, or a folder that holds it
        cfg = config(tmp_path, ca_certs=[str(entry)], image_prefix=prefix)
        with pytest.raises(ConfigError, match="not-a-cert.crt holds no PEM certificate"):
            ImageBuilder(engine, cfg).build(["base"])
    assert engine.image_id(cfg.image("base")) is None


# -- real builds under a throwaway prefix -------------------------------------------------------------

def test_failing_build_names_the_step_and_shows_the_log_tail(engine: Engine, images: None, tmp_path: Path,
                                                             images_copy: Path, prefix: str):
    (images_copy / "redis" / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo about-to-fail && false\n")
    project = tmp_path / "project"
    project.mkdir()
    # Loaded like the session's images were (user config included), so base hashes the same.
    cfg = LabConfig.load(project, "pytest-images-fail", images_dir=images_copy, image_prefix=prefix)
    builder = ImageBuilder(engine, cfg)
    real_base = LabConfig.load(project, "pytest-images-fail").image("base")
    assert builder.content_hash(BY_NAME["base"]) == engine.image_labels(real_base)[CONTENT_HASH], (
        "the copied base should hash like the built one; otherwise this test would rebuild base")
    repository, _, tag = cfg.image("base").rpartition(":")
    engine.tag_image(real_base, repository, tag)  # `order()` wants base; it is up to date under the prefix
    assert builder.up_to_date(BY_NAME["base"])

    events: list[BuildEvent] = []
    with pytest.raises(BuildError) as caught:
        builder.build(["redis"], progress=events.append)
    err = caught.value
    assert err.image == "redis"
    assert err.step is not None and "RUN echo about-to-fail && false" in err.step
    assert "about-to-fail" in err.log_tail
    assert "returned a non-zero code: 1" in err.log_tail[-1]
    message = str(err)
    assert f"building {cfg.image('redis')} failed at" in message
    assert "RUN echo about-to-fail && false" in message and "\n  about-to-fail\n" in message
    assert [(e.image, e.kind) for e in events][0] == ("base", "skipped")
    assert ("redis", "step", "RUN echo about-to-fail && false") in [(e.image, e.kind, e.text) for e in events]
    assert engine.image_id(cfg.image("redis")) is None
    assert engine.image_id(real_base) is not None  # untagging the prefix later leaves the real base alone


def test_ca_cert_is_baked_into_base(engine: Engine, images: None, tmp_path: Path, prefix: str,
                                    throwaway_ca: dict[str, Path]):
    project = tmp_path / "project"
    project.mkdir()
    cfg = LabConfig.load(project, "pytest-images-ca", image_prefix=prefix, ca_certs=[str(throwaway_ca["ca"])])
    builder = ImageBuilder(engine, cfg)
    outcomes = builder.build(["base"])
    assert [(o.image, o.tag, o.built) for o in outcomes] == [("base", cfg.image("base"), True)]
    assert engine.image_labels(cfg.image("base"))[CONTENT_HASH] == outcomes[0].content_hash
    assert [o.built for o in ImageBuilder(engine, cfg).build(["base"])] == [False]

    pem = throwaway_ca["ca"].read_text().strip()
    leaf = throwaway_ca["leaf"].read_text()
    script = (f"for v in {' '.join(CA_ENV)}; do echo \"$v=$(printenv $v)\"; done; echo ---; cat {BUNDLE}; "
              "echo ---; printf '%s' \"$LEAF\" > /tmp/leaf.pem; "
              "openssl verify -CAfile \"$SSL_CERT_FILE\" /tmp/leaf.pem")
    code, out = run_in(engine, cfg.image("base"), script, env={"LEAF": leaf})
    env_text, bundle, verify = out.split("\n---\n")
    env = dict(line.split("=", 1) for line in env_text.splitlines())
    assert {k: env.get(k) for k in CA_ENV} == {k: BUNDLE for k in CA_ENV}
    assert pem in bundle
    assert "-----BEGIN CERTIFICATE-----" in bundle.replace(pem, "")  # the usual CAs are still there
    assert code == 0 and "/tmp/leaf.pem: OK" in verify, verify

    # Control: the lab's own base does not know the throwaway CA, so the same check fails there.
    code, out = run_in(engine, LabConfig.load(project, "pytest-images-ca").image("base"),
                       "printf '%s' \"$LEAF\" > /tmp/leaf.pem; "
                       "openssl verify -CAfile \"$SSL_CERT_FILE\" /tmp/leaf.pem", env={"LEAF": leaf})
    assert code != 0 and "unable to get local issuer certificate" in out
