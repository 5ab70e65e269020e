"""``python -m bastion.cli``: how ``bastion serve`` starts its worker child."""

from bastion.cli import app

app()
