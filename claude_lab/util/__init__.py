"""Small helpers written once for the whole package: waiting, redaction, undo, host ports (stdlib only)."""
