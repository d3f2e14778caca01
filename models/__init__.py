"""The Bayesian marketing mix model: pure computation (arrays in, posterior and decisions out).

No database, no HTTP, no environment, no wall clock here.
"""
