"""loratui: train LoRA adapters for diffusion image models from a terminal.

This package is the terminal side (CLI, config, dataset scan, engine launch). It never imports
torch: the training engine lives in the sibling package ``engine`` and runs as a child process.
"""

__version__ = "0.1.0"
