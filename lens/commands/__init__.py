"""CLI commands, one module per group. Each module defines ``commands = [...]``.

Keep imports here light: load torch, sentence-transformers, dash etc. inside the
command function, not at module level.
"""
