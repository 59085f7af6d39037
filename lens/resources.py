"""Find the project's data folders (``sql/``, ``prompts/``) from a checkout or a wheel.

In a wheel they are packaged inside ``lens`` (``lens/sql``, ``lens/prompts``); in a
checkout they sit beside the package at the repository root.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    """Return the folder ``name`` (``"sql"`` or ``"prompts"``) as a filesystem path."""
    packaged = resources.files("lens") / name
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"Lens data folder {name!r} is missing from this installation")
