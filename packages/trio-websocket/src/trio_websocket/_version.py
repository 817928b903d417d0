#: The installed trio-websocket's version: the meta-package continues the
#: numbering of trio-websocket 0.12, while the packages it installs have their own.
__version__ = "0.13.0"
