"""What the lab runs: the dev services' and agents' container specs, hardening options, and commands in containers."""
