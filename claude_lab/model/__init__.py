"""The model side of a run: the Messages API on the wire, the lab's HTTP server base, the scripted model,
the recording proxy, and which endpoint and key a run uses."""
