"""The report: Pareto fronts, the recommendation, tables, plots, and the live progress line."""
