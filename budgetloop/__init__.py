"""budgetloop: closed-loop marketing mix modeling with a human in charge.

The shared kernel lives here: the clock (time is an input), the error tree, settings, the database
layer and the command line. Domain code lives in the top-level packages ``models`` (pure Bayesian
MMM), ``guardrails`` (pure policy engine), ``connectors`` (ad platforms and their sandbox),
``agents`` (scheduled jobs) and ``service`` (REST and Slack).
"""

__version__ = "0.1.0"
