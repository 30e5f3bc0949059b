"""The daemon seen from outside: the exporter web server, /metrics, /status, the page."""
