"""Measuring plans: evaluation, sensitivity, search, Pareto frontier, runtime comparison."""
