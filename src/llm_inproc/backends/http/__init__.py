"""The remote backend and the client's half of the wire format."""
