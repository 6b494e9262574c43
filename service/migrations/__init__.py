"""Alembic migrations of the service's database: API keys, dashboard sessions, the prediction
and audit logs (`service.keys.upgrade_database` runs them)."""
