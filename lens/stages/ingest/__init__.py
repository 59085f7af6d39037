"""``lens ingest`` (moved into a package; split into modules in the next commit)."""

from lens.stages.ingest.predictions import *  # noqa: F401,F403
