"""A local stand-in for the Vercel Blob HTTP API, speaking exactly what the vercel-blob SDK sends.

Routes under <base>/api/blob (the SDK's VERCEL_BLOB_API_URL): PUT ?pathname= (put),
GET ?url= (head), GET ?prefix=&limit=&cursor= (list), POST /delete {"urls"}, POST /mpu with
x-mpu-action create / upload / complete. Blobs are then served at <base>/blobs/<pathname>.

Multipart as Vercel documents it: create answers {key, uploadId}; upload and complete name the upload by
x-mpu-upload-id and x-mpu-key together; parts are numbered 1..10,000 and may come in any order; every part but the
last is at least 5 MiB; nothing is at the pathname until complete, which removes the upload. There is no abort and
no listing of parts. An upload never completed is dropped by the store on its own (expire_uploads() does it now).
"""
from __future__ import annotations

import hashlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

API_PATH = "/api/blob"
BLOB_PATH = "/blobs/"
MIN_PART = 5 * 1024 * 1024
MAX_PART_NUMBER = 10_000


@dataclass
class StoredBlob:
    data: bytes
    content_type: str
    uploaded_at: str
    etag: str


@dataclass
class VercelBlobDouble:
    """The store, its token, a request log and a queue of forced failures, served from a thread."""

    store_id: str = "teststore"
    token: str = field(default_factory=lambda: f"vercel_blob_rw_teststore_{secrets.token_hex(12)}")
    blobs: dict[str, StoredBlob] = field(default_factory=dict)
    uploads: dict[str, dict] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)
    """HTTP statuses to answer the next API requests with, one each (e.g. [503])."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    hold_action: str | None = None
    """An x-mpu-action whose next request waits, once arrived is set, until released is (fail_next still applies
    after the wait): lets a test kill its client mid-call."""
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    meet: threading.Barrier | None = None
    """When set, the next part uploads wait for each other here, one party each (broken, and answered 500, when
    they come one after another): lets a test see that parts are in flight together."""
    met: list[int] = field(default_factory=list)
    """The part numbers that met."""

    def expire_uploads(self) -> None:
        """Drop every multipart upload not completed, as the store does with old ones: their ids become unknown."""
        with self.lock:
            self.uploads.clear()

    @property
    def base_url(self) -> str:
        assert self.server is not None, "start() the double first"
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PATH

    def start(self) -> VercelBlobDouble:
        double = self

        class Handler(_Handler):
            store = double

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="vercel-blob-double", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def blob_url(self, pathname: str) -> str:
        return f"{self.base_url}{BLOB_PATH}{quote(pathname)}"

    def describe(self, pathname: str, with_size: bool = True) -> dict:
        blob = self.blobs[pathname]
        url = self.blob_url(pathname)
        body = {"url": url, "downloadUrl": f"{url}?download=1", "pathname": pathname,
                "contentType": blob.content_type, "etag": blob.etag,
                "contentDisposition": f'inline; filename="{pathname.rsplit("/", 1)[-1]}"'}
        if with_size:
            body |= {"size": len(blob.data), "uploadedAt": blob.uploaded_at,
                     "cacheControl": "public, max-age=2592000"}
        return body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: VercelBlobDouble

    def log_message(self, format: str, *args: object) -> None:
        pass

    # plumbing ---------------------------------------------------------------

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode())

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(status, {"error": {"code": code, "message": message}})

    def _api(self, handler_name: str) -> None:
        """Common checks for API calls: forced failures, then the bearer token."""
        split = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        body = self._body()
        store = self.store
        with store.lock:
            store.log.append((self.command, f"{split.path}:{self.headers.get('x-mpu-action', '')}"
                                            f":{self.headers.get('x-mpu-part-number', '')}"))
            hold = store.hold_action is not None and self.headers.get("x-mpu-action") == store.hold_action
            if hold:
                store.hold_action = None
        if hold:
            store.arrived.set()
            store.released.wait()
        if self.headers.get("x-mpu-action") == "upload" and self._meets():
            try:
                store.meet.wait()  # type: ignore[union-attr]
            except threading.BrokenBarrierError:
                return self._error(500, "internal", "parts did not arrive together")
        with store.lock:
            forced = store.fail_next.pop(0) if store.fail_next else None
        if forced:
            return self._error(forced, "service_unavailable" if forced == 503 else "internal",
                               "forced failure")
        presented = self.headers.get("authorization", "").removeprefix("Bearer ")
        if presented != store.token:
            # Like some real services, echo what was presented: the provider must scrub it.
            return self._error(403, "forbidden", f"Access denied for token {presented}")
        getattr(self, handler_name)(split.path.removeprefix(API_PATH), query, body)

    def _meets(self) -> bool:
        store = self.store
        with store.lock:
            if store.meet is None or len(store.met) >= store.meet.parties:
                return False
            store.met.append(int(self.headers.get("x-mpu-part-number", "0")))
            return True

    # routing ----------------------------------------------------------------

    def do_GET(self) -> None:
        if self.path.startswith(API_PATH):
            return self._api("_api_get")
        self._download()

    def do_HEAD(self) -> None:
        self._download()

    def do_PUT(self) -> None:
        self._api("_api_put")

    def do_POST(self) -> None:
        self._api("_api_post")

    # API --------------------------------------------------------------------

    def _pathname(self, value: str) -> str:
        if value.startswith(("http://", "https://")):
            return unquote(urlsplit(value).path).removeprefix(BLOB_PATH).lstrip("/")
        return value.lstrip("/")

    def _api_get(self, path: str, query: dict[str, str], body: bytes) -> None:
        store = self.store
        if "url" in query:
            pathname = self._pathname(query["url"])
            if pathname not in store.blobs:
                return self._error(404, "not_found", "The requested blob does not exist")
            return self._json(200, store.describe(pathname))
        prefix, limit = query.get("prefix", ""), int(query.get("limit") or 1000)
        start = int(query.get("cursor") or 0)
        names = sorted(n for n in store.blobs if n.startswith(prefix))
        page = names[start:start + limit]
        more = start + limit < len(names)
        blobs = [{k: v for k, v in store.describe(n).items()
                  if k in ("url", "downloadUrl", "pathname", "size", "uploadedAt", "etag")} for n in page]
        self._json(200, {"blobs": blobs, "hasMore": more, "cursor": str(start + limit) if more else None})

    def _store(self, pathname: str, data: bytes) -> None:
        store = self.store
        if pathname in store.blobs and self.headers.get("x-allow-overwrite") != "1":
            return self._error(400, "bad_request", "This blob already exists")
        content_type = self.headers.get("x-content-type") or "application/octet-stream"
        store.blobs[pathname] = StoredBlob(
            data, content_type, datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            f'"{hashlib.md5(data).hexdigest()}"',
        )
        self._json(200, store.describe(pathname, with_size=False))

    def _api_put(self, path: str, query: dict[str, str], body: bytes) -> None:
        self._store(query["pathname"], body)

    def _api_post(self, path: str, query: dict[str, str], body: bytes) -> None:
        store = self.store
        if path == "/delete":
            for target in json.loads(body)["urls"]:
                store.blobs.pop(self._pathname(target), None)
            return self._json(200, {})
        action = self.headers.get("x-mpu-action")
        if action == "create":
            upload_id = secrets.token_hex(8)
            key = f"{secrets.token_hex(4)}/{query['pathname']}"  # the store's own name for the upload's object
            store.uploads[upload_id] = {"pathname": query["pathname"], "key": key, "parts": {}}
            return self._json(200, {"key": key, "uploadId": upload_id})
        upload = store.uploads.get(self.headers.get("x-mpu-upload-id", ""))
        if upload is None or unquote(self.headers.get("x-mpu-key", "")) != upload["key"]:
            return self._error(404, "not_found", "The multipart upload does not exist")
        if action == "upload":
            number = int(self.headers["x-mpu-part-number"])
            if not 1 <= number <= MAX_PART_NUMBER:
                return self._error(400, "bad_request", "Part numbers are 1 to 10,000")
            etag = hashlib.md5(body).hexdigest()
            upload["parts"][number] = (etag, body)
            return self._json(200, {"etag": etag})
        parts = json.loads(body)
        chosen = [upload["parts"].get(p["partNumber"]) for p in parts]
        if any(c is None or c[0] != p["etag"] for c, p in zip(chosen, parts)):
            return self._error(400, "bad_request", "Unknown part or etag")
        if any(len(c[1]) < MIN_PART for c in chosen[:-1]):
            return self._error(400, "bad_request", "Parts except the last must be at least 5 MiB")
        store.uploads.pop(self.headers["x-mpu-upload-id"], None)
        self._store(upload["pathname"], b"".join(c[1] for c in chosen))

    # delivery ---------------------------------------------------------------

    def _download(self) -> None:
        pathname = unquote(urlsplit(self.path).path).removeprefix(BLOB_PATH)
        blob = self.store.blobs.get(pathname)
        if blob is None:
            return self._send(404, b"Not Found", "text/plain")
        self._send(200, blob.data, blob.content_type, {"ETag": blob.etag})
