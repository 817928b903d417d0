#: The installed trio-websocket-core's version. Each distribution is released
#: on its own; the client and the server accept any core of their minor version.
__version__ = "0.2.0"
