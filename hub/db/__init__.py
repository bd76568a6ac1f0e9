"""The metadata store: ORM models, engines and schema migrations."""
