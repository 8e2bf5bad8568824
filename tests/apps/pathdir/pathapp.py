"""Only importable through --pythonpath (or --chdir) pointing at tests/apps/pathdir."""


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "7")])
    return [b"pathapp"]
