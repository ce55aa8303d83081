"""The built-in plugins. Each module is registered through the ``harness`` entry-point group in
pyproject.toml, exactly as a third-party plugin would be; the core never imports this package."""
