"""A fake Prometheus (``/api/v1/query``) and JSON endpoint on loopback for the metric gate tests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FakePrometheus:
    """Answers instant queries from a table of (substring -> value).

    ``answers`` maps a substring of the query to a number (one-series
    vector), ``None`` (empty vector), ``"NaN"``, a list of numbers (several
    series) or a dict (the whole JSON payload). The first matching entry wins;
    an unmatched query gets an empty vector. Every request is recorded with
    its headers. ``json_doc`` is served on any other path.
    """

    def __init__(self, answers=None, json_doc=None, status=200):
        self.answers = dict(answers or {})
        self.json_doc = json_doc
        self.status = status
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # noqa: D401 - quiet
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                query = parse_qs(parts.query).get("query", [""])[0]
                fake.requests.append({"path": parts.path, "query": query,
                                      "headers": {k.lower(): v for k, v in self.headers.items()}})
                if parts.path == "/api/v1/query":
                    body = fake.answer(query)
                else:
                    body = fake.json_doc
                data = json.dumps(body).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, query):
        if self.status != 200:
            return {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
        value = next((v for needle, v in self.answers.items() if needle in query), None)
        if isinstance(value, dict):
            return value
        if value is None:
            result = []
        elif isinstance(value, list):
            result = [{"metric": {"instance": f"i{i}"}, "value": [1700000000.0, str(v)]} for i, v in enumerate(value)]
        else:
            result = [{"metric": {}, "value": [1700000000.0, str(value)]}]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
