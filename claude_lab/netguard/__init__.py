"""Each agent's egress firewall: the pure policy model (`policy`), then the sidecar that enforces it (`sidecar`)."""
