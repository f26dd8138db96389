"""loratui's built-in colour themes (the ``*.toml`` files here, see README.md).

This folder is installed as the package ``loratui.themes`` (``package-dir`` in pyproject.toml) so that
a wheel or pipx install carries the theme files; ``loratui.tui.themes`` reads them from there.
"""
