"""The user's project repository, as the host's `git` sees it: read without side effects.

Every command here runs with `GIT_OPTIONAL_LOCKS=0`, so even a read (`git status`) never rewrites the
user's index; nothing here changes the working tree, the index, HEAD or a branch. What we must compute
(a tree for uncommitted changes, a trial merge) is written to a scratch object directory that borrows
the project's objects as alternates, so not even an object lands in the user's repository until an
operation they asked for succeeds.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, LabError

AUTHOR = {"GIT_AUTHOR_NAME": "claude-lab", "GIT_AUTHOR_EMAIL": "claude-lab@localhost",
          "GIT_COMMITTER_NAME": "claude-lab", "GIT_COMMITTER_EMAIL": "claude-lab@localhost"}
_QUIET = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
NOT_A_REPO_HINT = ("make it one (`git init && git add -A && git commit -m start` in the project), or create the "
                   "agent with an empty workspace (source=None, `--from none`)")


def git_available() -> bool:
    return shutil.which("git") is not None


class GitError(LabError):
    """A git command on the host failed; the message has git's own words."""


class ProjectRepo:
    """A git repository on the host (the project, or another one given as `source`)."""

    def __init__(self, top: Path):
        self.top = top
        common = self.git("rev-parse", "--path-format=absolute", "--git-common-dir").strip()
        self.objects = Path(common) / "objects"

    @classmethod
    def find(cls, path: str | os.PathLike) -> "ProjectRepo | None":
        """The repository whose work tree holds `path`, or None (not a repository, or no git here)."""
        if not git_available() or not Path(path).is_dir():
            return None
        proc = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True,
                              text=True, env={**os.environ, **_QUIET})
        if proc.returncode != 0:
            return None
        return cls(Path(proc.stdout.strip()))

    @classmethod
    def at(cls, path: str | os.PathLike, what: str = "the project") -> "ProjectRepo":
        found = cls.find(path)
        if found is None:
            if not git_available():
                raise ConfigError("git is not installed on this machine: install it (`apt-get install git`) to "
                                  "seed agents from a repository, or use source=None")
            raise ConfigError(f"{what} {str(path)!r} is not a git repository: {NOT_A_REPO_HINT}")
        return found

    def git(self, *args: str, env: dict[str, str] | None = None, input: bytes | None = None,
            check: bool = True, text: bool = True, cwd: Path | None = None) -> str:
        out = self.run(*args, env=env, input=input, cwd=cwd)
        if check and out.returncode != 0:
            raise GitError(f"git {' '.join(args[:3])} in {self.top} failed: "
                           f"{(out.stderr or out.stdout).decode('utf-8', 'replace').strip()[-800:]}")
        return out.stdout.decode("utf-8", "replace") if text else out.stdout  # type: ignore[return-value]

    def run(self, *args: str, env: dict[str, str] | None = None, input: bytes | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", *args],
                              cwd=str(cwd or self.top), capture_output=True, input=input,
                              env={**os.environ, **_QUIET, **(env or {})})

    # -- reading ------------------------------------------------------------------------------
    def commit(self, ref: str) -> str:
        """The commit a ref names (a branch, a tag, a sha); ConfigError naming the ref when there is none."""
        out = self.run("rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        if out.returncode != 0:
            if ref == "HEAD":
                raise ConfigError(f"the repository {self.top} has no commit yet: commit something first "
                                  f"(`git add -A && git commit -m start`), or use source=None")
            raise ConfigError(f"ref {ref!r} is not a commit in {self.top}; give a branch, a tag or a commit "
                              f"(`git -C {self.top} log --oneline` lists them)")
        return out.stdout.decode().strip()

    def branch(self) -> str | None:
        """The current branch's short name, or None when HEAD is detached."""
        out = self.run("symbolic-ref", "-q", "--short", "HEAD")
        return out.stdout.decode().strip() if out.returncode == 0 else None

    def dirty(self) -> list[str]:
        """Paths with uncommitted changes: staged, unstaged, and untracked files that are not ignored."""
        out = self.git("status", "--porcelain=v1", "-z", "--untracked-files=all", text=False)
        paths: list[str] = []
        entries = out.split(b"\0")  # type: ignore[union-attr]
        i = 0
        while i < len(entries):
            entry = entries[i]
            if len(entry) > 3:
                paths.append(entry[3:].decode("utf-8", "surrogateescape"))
                if entry[:1] in (b"R", b"C"):  # a rename: the next entry is its old path
                    i += 1
                    paths.append(entries[i].decode("utf-8", "surrogateescape"))
            i += 1
        return sorted(set(paths))

    # -- scratch object directories: computed objects that never land in the user's repository ----
    @contextmanager
    def scratch(self) -> Iterator["Scratch"]:
        with tempfile.TemporaryDirectory(prefix="claude-lab-git-") as tmp:
            yield Scratch(self, Path(tmp))


class Scratch:
    """A bare repository in a temporary folder whose objects borrow the project's (alternates), plus the
    environment that makes git commands in the project write their new objects there instead."""

    def __init__(self, repo: ProjectRepo, root: Path):
        self.repo, self.root = repo, root
        subprocess.run(["git", "init", "-q", "--bare", str(root / "repo.git")], check=True, capture_output=True,
                       env={**os.environ, **_QUIET})
        self.bare = root / "repo.git"
        (self.bare / "objects" / "info" / "alternates").write_text(str(repo.objects) + "\n")
        self.env = {"GIT_OBJECT_DIRECTORY": str(self.bare / "objects"),
                    "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(repo.objects)}

    def git(self, *args: str, env: dict[str, str] | None = None, text: bool = True) -> str:
        """A command in the project's work tree whose new objects go to the scratch repository."""
        return self.repo.git(*args, env={**self.env, **(env or {})}, text=text)

    def bare_git(self, *args: str, text: bool = True) -> str:
        """A command in the scratch repository itself (its refs are its own)."""
        return self.repo.git(f"--git-dir={self.bare}", *args, text=text, cwd=self.root)

    def uncommitted_commit(self, base: str, message: str) -> str:
        """A commit on top of `base` holding the work tree as it is now (staged, unstaged and untracked files
        that are not ignored); `base` itself when nothing is uncommitted. The user's index is not used."""
        index = {"GIT_INDEX_FILE": str(self.root / "index")}
        self.git("read-tree", base, env=index)
        self.git("add", "-A", env=index)
        tree = self.git("write-tree", env=index).strip()
        if tree == self.git("rev-parse", f"{base}^{{tree}}").strip():
            return base
        return self.git("commit-tree", tree, "-p", base, "-m", message, env=AUTHOR).strip()

    def bundle(self, commit: str, branch: str, path: Path) -> Path:
        """A git bundle of `commit`'s whole history as `refs/heads/<branch>`, written to `path`."""
        self.bare_git("update-ref", f"refs/heads/{branch}", commit)
        # No new delta search and no deflating of loose objects: the bundle only crosses a local socket,
        # and what the project has packed already is copied as it is (git reuses its deltas).
        self.bare_git("-c", "pack.window=0", "-c", "pack.compression=0", "bundle", "create", "-q", str(path),
                      f"refs/heads/{branch}")
        return path
