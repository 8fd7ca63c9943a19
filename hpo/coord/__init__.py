"""Coordination: many workers, one study, the budget exact and every grid point run once.

Storage URLs and connections, the study-wide lock, claiming a trial against the shared budget,
heartbeats and the recovery of dead workers' trials, retries through a database restart,
signals that give a trial back, the worker loop, local worker processes, progress lines and
status/best/CSV results. Imports :mod:`hpo.config` and :mod:`hpo.objective`, never insight.

- ``storage`` / ``retry`` / ``lock``: URLs and connections; waiting out outages; the study lock
- ``failures``: a full disk, a read-only folder, a damaged or deleted SQLite file, in one line
- ``study``: create or join a study, claim a trial, give one back
- ``heartbeat`` / ``recovery`` / ``signals``: liveness, dead workers' trials, SIGINT/SIGTERM
- ``worker`` / ``runner``: one worker's loop; N local worker processes
- ``progress`` / ``logs`` / ``results``: progress and log lines; status, best trial, CSV
- ``confirm``: a study's top configurations, and the confirm study that retrains them
"""
