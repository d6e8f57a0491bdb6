"""Runs in agents' workspaces: typed events and results, the runner (claude, shell), workspace git steps,
the run store (SQLite) and portable bundles, the recorder, and replay (normalized requests, the cassette,
the workspace snapshot)."""
