"""loratui: train LoRA adapters for diffusion image models from a terminal.

This package is the terminal side (CLI, config, dataset scan, engine launch). It never imports
torch: the training engine lives in the sibling package ``engine`` and runs as a child process.
"""

__version__ = "0.1.0"


def run() -> int:
    """The ``loratui`` console command. It imports the CLI itself so that a Ctrl+C pressed while
    the imports run still ends quietly (exit status 130) instead of with a traceback."""
    from loratui.core.exit_codes import ExitCode  # an enum, no more: start-up stays fast

    try:
        from loratui.cli import main

        return main()
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
