"""Lens: structured error analysis for ML classifiers.

Failures, hypotheses, clusters and human reviews land in one DuckDB warehouse.
Import :mod:`lens.warehouse` for the database, :mod:`lens.stages` for the pipeline.
"""

__version__ = "0.1.0"
