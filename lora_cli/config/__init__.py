"""Config kinds, their schemas (schemas.py), loading and error wording. This file stays free of
pydantic so the command line can name the kinds without importing it."""

KINDS = ("pipeline", "approx", "sweep")  # schemas.SCHEMAS, and sweep.SweepSpec
