"""The torch-free core that both sides import: the engine (the training child process) and the
terminal side (CLI, jobs, TUI).

- :mod:`~loratui.core.protocol`: the JSON-lines events and control commands, versioned;
- :mod:`~loratui.core.summary`: a run's events folded into what a dashboard shows, with the loss
  curve (:mod:`~loratui.core.history`) and the ETA (:mod:`~loratui.core.eta`);
- :mod:`~loratui.core.snapshot`: that fold saved beside the events, so re-attaching is instant;
- :mod:`~loratui.core.exit_codes`: what the engine's and the CLI's exit statuses mean;
- :mod:`~loratui.core.run_files`: opening run files and the control FIFO so that no symlink, FIFO
  or huge file found in a run folder can redirect, hang or exhaust a reader; owner-only folders;
- :mod:`~loratui.core.terminal_text`: names and messages made safe to show on a terminal (escape
  sequences in a file's name are shown, never obeyed).

Nothing here imports torch, Textual or the jobs layer (``tests/test_import_boundaries.py``).
"""
