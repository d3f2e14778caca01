"""`budgetloop demo`: the whole closed loop on a simulated market, in accelerated time, scored against the truth.

- :mod:`agents.demo.loop` drives the simulated days (the same jobs ``serve`` schedules).
- :mod:`agents.demo.approver` is the simulated marketer who answers in (fake) Slack.
- :mod:`agents.demo.score` is the only place outside the sandbox that reads the market's truth.
- :mod:`agents.demo.report` writes ``report.json`` (INTERFACES section 4) and ``report.html``.
"""
