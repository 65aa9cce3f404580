"""Alembic migrations of the store (``upgrade head`` runs when a store opens)."""
