"""Configuration: the schemas, typed building, recipe discovery and validation, the CLI, plugins."""
