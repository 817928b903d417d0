#: The installed trio-websocket-server's version, which is released on its own
#: (the core it runs on has its own :data:`trio_websocket_core.__version__`).
__version__ = "0.2.0"
