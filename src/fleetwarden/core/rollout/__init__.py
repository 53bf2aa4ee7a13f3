"""The staged rollout engine's decisions: strategy, windows, waves, risk, one planner tick,
and the rollout lifecycle. Pure functions over plain data; the server's controller applies
what they decide."""
