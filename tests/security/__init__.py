"""The hostile test suite: from inside agents, everything here must fail (SECURITY.md)."""
