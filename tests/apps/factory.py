"""App factories for the APP_MODULE forms `factory:create()` and `factory:create('x', k=1)`."""


def create(name="default", k=0):
    body = ("factory name=%s k=%s" % (name, k)).encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def named(environ, start_response):
    """Served as `factory:named`."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"named"]
