"""The HTTP edge: decision service, admin API, console and integrations for other apps."""
