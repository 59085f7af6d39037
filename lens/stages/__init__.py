"""Pipeline stages, one module each. Stages never import each other: they meet in the warehouse.

Each stage exposes ``run(warehouse, *, run_id, ...)`` and returns a small summary dataclass.
"""
