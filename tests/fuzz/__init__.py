"""Fuzzing: hypothesis properties and atheris targets for the parsers (docs/fuzzing.md)."""
