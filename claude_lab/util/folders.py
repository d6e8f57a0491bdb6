"""claude-lab's own folder in a project (`.claude-lab/`: the run store, cached seeds), which git ignores."""
from __future__ import annotations

from pathlib import Path

OWN_FOLDER = ".claude-lab"
_IGNORE = "# claude-lab's own files (the run store, cached seeds): not part of the project\n*\n"


def ensure_folder(folder: Path) -> Path:
    """Make `folder`; when it is claude-lab's own folder, with a .gitignore of its own, so that what we keep
    there never shows as untracked (nor rides along with an agent's `include_uncommitted`)."""
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if folder.name == OWN_FOLDER and not ignore.exists():
        ignore.write_text(_IGNORE)
    return folder
