"""The fleet simulator: many virtual devices in one process, each running the real agent state
machine (``fleetwarden.agent.Agent``) with a simulated installer, in-memory stores and
injectable faults. Used by ``fleetwarden sim``, ``fleetwarden demo`` and the benchmarks.
"""

from fleetwarden.sim.fleet import Fleet, SimConfig

__all__ = ["Fleet", "SimConfig"]
