"""Storage: the schema, engines for SQLite and PostgreSQL, migrations and the SQL of every slice.

Only this package writes SQL. Services talk to the `Store` it builds.
"""
