"""Jobs: training runs that outlive the terminal that started them.

- :mod:`launch` starts the engine in a session of its own and writes the job record;
- :mod:`record` and :mod:`registry` keep what is known of every job (per user, any folder);
- :mod:`process` tells a live engine from a dead one or from a reused pid;
- :mod:`status` says what state a job is in (running, paused, finished, stopped, failed, lost);
- :mod:`follow` reads a run's ``events.jsonl`` as it grows;
- :mod:`summary` folds those events into what a dashboard shows, :mod:`history` and :mod:`eta`
  are its parts, and :mod:`rebuild` folds a long log quickly on re-attach;
- :mod:`control` sends stop/save/pause/resume to a running engine.

Nothing here imports torch or Textual.
"""
