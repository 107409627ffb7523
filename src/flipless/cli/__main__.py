"""``python -m flipless.cli``."""

from flipless.cli import app

app()
