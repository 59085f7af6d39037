"""The Lens Dash app (dashboard + review form) over the warehouse.

``from dashboards.app import create_app`` (imports Dash); ``lens serve`` runs it. Kept
import-light so ``lens --help`` does not load Dash.
"""
