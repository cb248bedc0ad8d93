"""Looking into a running deployment: status, logs, health and a diagnostic archive.

The modules split what can be tested without hosts from what talks to them:

- pure (text in, text or facts out): `commands` (the shell commands), `parse` (their
  output), `report` (facts to healthy or failing rows, and their rendering), `sources` (which
  logs a service has); secrets are kept out of an archive by `swarmhub.mask`, which the
  runbook uses too (failed-command lines);
- running: `remote` (reaching hosts, where an unreachable host is an answer, not a crash),
  `status`, `logs`, `health`, `diagnose`.

Everything here only reads: no command built here changes a host.
"""
