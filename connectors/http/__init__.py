"""The HTTP custom-action connector: runs `http` activities' calls and reports the answers."""

from connectors.http.connector import HttpActionConnector, register, response_event

__all__ = ["HttpActionConnector", "register", "response_event"]
