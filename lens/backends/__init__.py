"""Model backends: hypothesis backends and embedders, chosen by name. They know nothing of DuckDB."""
