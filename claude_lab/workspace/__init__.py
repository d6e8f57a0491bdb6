"""Agents on the user's project: the host's git read without side effects, the seed, git in the agent,
the round trip back (fetch, merge, apply), and files in and out of containers."""
