"""``hapexpr simulate``: a realistic synthetic cohort (msprime) in standard files.

msprime is imported only inside the functions that simulate, so importing this package is cheap.
"""

from hapexpr.simulate.cohort import Cohort, SimulationConfig, simulate, simulate_cohort, write_cohort

__all__ = ["Cohort", "SimulationConfig", "simulate", "simulate_cohort", "write_cohort"]
