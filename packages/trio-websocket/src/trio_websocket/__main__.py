"""``python -m trio_websocket URL`` talks to a WebSocket server from the terminal;
``python -m trio_websocket --serve HOST:PORT`` runs an echo server. See ``--help``."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
