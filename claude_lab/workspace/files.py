"""Files and folders between the host and a lab container, as tar streams (never whole in memory).

Into a container, entries belong to the container's user (numeric ids: the container's root has no
capability to chown afterwards). Out of a container, the archive is unpacked with tarfile's "data"
filter into a scratch folder beside the destination and moved into place only when every entry is
safe: an absolute path, a `..` or a link that leaves the destination refuses the copy and writes
nothing.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterator

from ..errors import LabError, NotFound

if TYPE_CHECKING:
    from ..engine.face import EngineFace

CHUNK = 1 << 20


def tar_stream(fill: Callable[[tarfile.TarFile], None]) -> Iterator[bytes]:
    """The bytes of a tar that `fill(tar)` writes, as they are written (a pipe and a writer thread)."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            with os.fdopen(write_fd, "wb") as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                fill(tar)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            failure.append(exc)

    thread = threading.Thread(target=writer, name="claude-lab-tar", daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb") as src:
        while chunk := src.read(CHUNK):
            yield chunk
    thread.join()
    if failure:
        raise LabError(f"could not read what was to be copied: {failure[0]}") from failure[0]


def owned_by(uid: int, gid: int) -> Callable[[tarfile.TarInfo], tarfile.TarInfo]:
    def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid, info.uname, info.gname = uid, gid, "", ""
        return info
    return owner


def container_ids(engine: "EngineFace", container: str, user: str | None) -> tuple[int, int]:
    """The uid and gid of `user` (or the container's own user) in the container."""
    exec_id, out, err = engine.exec_output(container, ["sh", "-c", "id -u; id -g"], user=user)
    try:
        uid, gid = (int(x) for x in out.decode().split()[:2])
    except ValueError:
        raise LabError(f"could not learn the user ids in {container}: {err.decode('utf-8', 'replace').strip()}") from None
    return uid, gid


def copy_to(engine: "EngineFace", container: str, src: Path, dest: str, uid: int, gid: int) -> str:
    """Copy a host file or folder to `dest` in the container: into `dest` when it is a folder there, else as
    `dest` (its parent must exist). Returns where it landed."""
    if not src.exists():
        raise NotFound(f"{src} does not exist on this machine; give a file or a folder to copy")
    target = PurePosixPath(dest)
    if not target.is_absolute():
        raise LabError(f"{dest!r}: give an absolute path in the container, for example /workspace/{src.name}")
    _, out, _ = engine.exec_output(container, ["sh", "-c", 'if [ -d "$1" ]; then echo dir; elif [ -d "$(dirname "$1")" ];'
                                                      ' then echo parent; else echo none; fi', "sh", str(target)])
    kind = out.decode().strip()
    if kind == "none":
        raise NotFound(f"{target.parent} does not exist in {container}; create it first (mkdir -p)")
    folder, name = (target, src.name) if kind == "dir" else (target.parent, target.name)
    owner = owned_by(uid, gid)
    engine.put_archive(container, str(folder), tar_stream(lambda tar: tar.add(str(src), arcname=name, filter=owner)))
    return str(folder / name)


def copy_from(engine: "EngineFace", container: str, src: str, dest: Path) -> Path:
    """Copy a file or folder out of the container to `dest` on the host: into `dest` when it is a folder,
    else as `dest`. Nothing of an unsafe archive is written. Returns where it landed."""
    stream, stat = engine.get_archive(container, src)
    name = stat.get("name") or PurePosixPath(src).name
    folder, final = (dest, dest / name) if dest.is_dir() else (dest.parent, dest)
    if not folder.is_dir():
        raise NotFound(f"{folder} does not exist on this machine; create it first")
    if final.exists():
        raise LabError(f"{final} exists already; copying over it could lose data: remove it or pick another name")
    with tempfile.TemporaryDirectory(prefix=".claude-lab-copy-", dir=folder) as scratch:
        reader = _IterReader(stream)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                try:
                    tar.extract(member, scratch, filter="data")
                except tarfile.FilterError as exc:
                    raise LabError(f"refused to copy {src} out of {container}: the entry {member.name!r} would "
                                   f"land outside {final} ({type(exc).__name__}); nothing was written") from None
        got = Path(scratch) / name
        if not got.exists() and not got.is_symlink():
            raise NotFound(f"{src} came out of {container} empty")
        shutil.move(str(got), str(final))
    return final


class _IterReader:
    """A file-like reader over an iterator of bytes (the engine's archive stream), for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = iter(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out
