"""CLI commands: parse, call the library, print. No math here."""
