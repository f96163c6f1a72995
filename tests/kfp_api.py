"""A KFP API server on loopback that keeps what the kfp client sends it.

It answers the v2beta1 REST paths the kfp client (2.17) calls to register a pipeline and its
versions, find or create an experiment and create runs and recurring runs, with the fields of
kfp_server_api's response models; each request's method, path, query and body are recorded, so
that a test can read the request the backend would get."""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class KfpApi:
    def __init__(self, multi_user: bool = True):
        self.multi_user = multi_user
        self.requests: list[dict] = []
        self.pipelines: dict[str, str] = {}  # name -> id
        self.versions: dict[str, dict[str, str]] = {}  # pipeline id -> version name -> id
        self.experiments: dict[str, str] = {}  # name -> id
        self._ids = itertools.count(1)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self._http.server_port}"

    def __enter__(self) -> KfpApi:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()

    def posted(self, path: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["method"] == "POST" and r["path"] == path]

    def _answer(self, method: str, path: str, query: dict, body) -> dict:
        name = query.get("name", [None])[0]
        if path == "/apis/v2beta1/healthz":
            return {"multi_user": self.multi_user}
        if path == "/apis/v2beta1/pipelines" and method == "GET":
            wanted = _filtered_name(query)
            found = [
                {"pipeline_id": pid, "display_name": n}
                for n, pid in self.pipelines.items()
                if n == wanted
            ]
            return {"pipelines": found, "total_size": len(found)} if found else {}
        if path == "/apis/v2beta1/pipelines/upload":
            pipeline_id = f"pipeline-{next(self._ids)}"
            self.pipelines[name] = pipeline_id
            self.versions[pipeline_id] = {name: f"version-{next(self._ids)}"}
            return {"pipeline_id": pipeline_id, "display_name": name}
        if path == "/apis/v2beta1/pipelines/upload_version":
            pipeline_id = query["pipelineid"][0]
            version_id = f"version-{next(self._ids)}"
            self.versions[pipeline_id][name] = version_id
            return {
                "pipeline_id": pipeline_id,
                "pipeline_version_id": version_id,
                "display_name": name,
            }
        if path.endswith("/versions") and method == "GET":
            pipeline_id = path.split("/")[-2]
            wanted = _filtered_name(query)
            found = [
                {"pipeline_id": pipeline_id, "pipeline_version_id": vid, "display_name": n}
                for n, vid in self.versions.get(pipeline_id, {}).items()
                if n == wanted
            ]
            return {"pipeline_versions": found, "total_size": len(found)} if found else {}
        if path == "/apis/v2beta1/experiments" and method == "GET":
            wanted = _filtered_name(query)
            found = [
                {"experiment_id": eid, "display_name": n}
                for n, eid in self.experiments.items()
                if n == wanted
            ]
            return {"experiments": found, "total_size": len(found)} if found else {}
        if path == "/apis/v2beta1/experiments":
            experiment_id = f"experiment-{next(self._ids)}"
            self.experiments[body["display_name"]] = experiment_id
            return {**body, "experiment_id": experiment_id}
        if path == "/apis/v2beta1/runs":
            return {**body, "run_id": f"run-{next(self._ids)}"}
        if path == "/apis/v2beta1/recurringruns":
            return {**body, "recurring_run_id": f"recurring-{next(self._ids)}"}
        raise LookupError(f"{method} {path}")

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                kind = self.headers.get("Content-Type", "")
                body = json.loads(raw) if raw and kind.startswith("application/json") else raw
                query = parse_qs(url.query)
                api.requests.append(
                    {
                        "method": method,
                        "path": url.path,
                        "query": query,
                        "body": body,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                )
                try:
                    status, answer = 200, api._answer(method, url.path, query, body)
                except LookupError as error:
                    status, answer = 404, {"error": str(error)}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's name
                self._serve("GET")

            def do_POST(self):  # noqa: N802 - http.server's name
                self._serve("POST")

            def log_message(self, *args):
                pass

        return Handler


def _filtered_name(query: dict) -> str | None:
    """The display name a list request filters on (kfp's filter JSON)."""
    text = query.get("filter", [None])[0]
    if not text:
        return None
    for predicate in json.loads(text).get("predicates", []):
        if predicate.get("key") in ("display_name", "name"):
            return predicate.get("string_value") or predicate.get("stringValue")
    return None
