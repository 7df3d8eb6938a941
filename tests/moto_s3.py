"""moto's S3 server (its own WSGI app and request handler), one request at a time: moto's recorder
appends each request to its file from the handling thread, and DVC's parallel uploads interleaved
those lines (a recording that no longer replayed). Replaying reaches this server from inside a
request, so that one request does not wait for the others.

usage: python -m tests.moto_s3 PORT
"""

import sys
import threading

from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def one_at_a_time(app):
    lock = threading.Lock()

    def serialized(environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/moto-api/recorder/"):
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    return serialized


if __name__ == "__main__":
    run_simple("127.0.0.1", int(sys.argv[1]), one_at_a_time(DomainDispatcherApplication(create_backend_app)),
               threaded=True, request_handler=MotoRequestHandler)
