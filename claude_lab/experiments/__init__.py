"""Experiments: tasks x variants x trials, each trial a fresh seeded agent, a recorded Claude run and a scorer."""
