"""``python -m arbctl`` (used by ``arbctl up --detach`` to start the supervisor)."""

from arbctl.main import app

app(prog_name="arbctl")
