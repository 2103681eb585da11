"""The database: the tables (models), creating and migrating them (schema) and the Alembic
revisions (migrations/), which are generated history and never edited."""
