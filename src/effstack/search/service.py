"""The search endpoints ``effstack serve --index INDEX`` adds next to the Open Inference Protocol ones.

=======  ================================  ==================================================================
GET      /search                           the search page (drop or pick an image, or type a text)
GET      /search/info                      count, kind, dimension, model (and a text index's corpus)
POST     /search/query?k=10                body: an encoded image; the k nearest images
POST     /search/query                     text index: body ``{"text": "...", "k": 10}``; the k nearest texts
GET      /search/query?id=ID&k=10          the k nearest items of a stored one
POST     /search/images?id=ID              body: an encoded image; add it (or replace ID)
POST     /search/texts                     text index: body ``{"id": "ID", "text": "..."}``; add (or replace)
DELETE   /search/images/{id}               remove it (also ``/search/texts/{id}``)
GET      /search/images/{id}/thumb         a JPEG thumbnail of a stored image
=======  ================================  ==================================================================

Answers are JSON; hits carry ``id``, ``score`` (cosine similarity) and ``path`` (a text index's: ``text``),
and queries report ``took_ms``, ``embed_ms`` and ``search_ms``. Mistakes are 4xx with ``{"error": "one
line"}`` (an unknown id is 404), among them a text sent to an image index or an image to a text index.
Embedding runs on a worker thread, one batch at a time per session; every add is acknowledged only once it
is in the index's write-ahead log.

>>> svc = SearchService.open("photos.idx")                     # doctest: +SKIP
>>> app = create_app(repo, ServerOptions(), extensions=[svc])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..errors import InputError
from .embed import Embedder, embedder_from_manifest
from .index import Index, UnknownIdError
from .page import PAGE, TEXT_PAGE

__all__ = ["SearchService"]

MAX_K = 100
THUMB_PX = 160
_THUMB_CACHE = 512
_IMAGE_TYPES = {b"\xff\xd8\xff": ".jpg", b"\x89PNG": ".png", b"GIF8": ".gif", b"BM": ".bmp", b"RIFF": ".webp"}


def _k(request: Any, given: Any = None) -> int:
    """k from a JSON body's ``given`` value, else from ``?k=`` (default 10), within 1..:data:`MAX_K`."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or not 1 <= given <= MAX_K:
            raise InputError(f"k must be a whole number within 1..{MAX_K}, got {json.dumps(given)[:40]}")
        return given
    raw = request.query_params.get("k", "10")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_K:
        raise InputError(f"k must be a whole number within 1..{MAX_K}, got {raw!r}")
    return int(raw)


def _looks_json(request: Any, body: bytes) -> bool:
    """Whether a request carries JSON (its content type says so, or it starts with '{': no image does)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return ctype == "application/json" or body.lstrip()[:1] == b"{"


def _json_object(body: bytes, shape: str) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the body is not valid JSON ({str(exc)[:80]}); send {shape}") from None
    if not isinstance(doc, dict):
        raise InputError(f"the body must be a JSON object, got {type(doc).__name__}; send {shape}")
    return doc


def _suffix(data: bytes) -> str:
    return next((s for magic, s in _IMAGE_TYPES.items() if data.startswith(magic)), ".img")


class SearchService:
    """An open, writable :class:`Index` and the :class:`Embedder` that fills it, behind HTTP routes.

    Args:
        index: the index (writable to accept adds and removals).
        embedder: embeds uploaded images; must have the index's fingerprint.
        max_request_bytes: uploads larger than this get 413.
    """

    def __init__(self, index: Index, embedder: Embedder | Any, max_request_bytes: int = 32 * 1024 * 1024):
        self.index = index
        self.embedder = embedder
        self.text = index.modality == "text"
        self.limit = max_request_bytes
        self.uploads = index.root / "uploads"
        self._embed_lock = threading.Lock()  # one engine call at a time per session
        self._thumbs: OrderedDict[str, bytes] = OrderedDict()
        self._thumbs_lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path, engine: str = "auto", precision: str | None = None,
             threads: int | None = None) -> SearchService:
        """Open the index at ``path`` for writing and load the model its manifest records.

        Raises:
            ArtifactError: no index, a damaged one, or the recorded model no longer matches it.
            ConfigError: another process is writing the index.
        """
        from .sources import index_sample

        index = Index.open(path, writable=True)
        try:  # an INT8 session of an fp32 index calibrates on a sample of the index's images
            if index.modality == "text":
                from .text import text_embedder_from_manifest

                return cls(index, text_embedder_from_manifest(index.model, index.dim, engine, precision, threads))
            return cls(index, embedder_from_manifest(index.model, engine, precision, threads,
                                                     calibration=index_sample(index)))
        except BaseException:
            index.close(checkpoint=False)
            raise

    # --- work done off the event loop ---------------------------------------------------------------

    def _embed(self, data: bytes) -> tuple[Any, float]:
        t0 = time.perf_counter()
        with self._embed_lock:
            v = self.embedder.embed_images([bytes(data)])
        return v, (time.perf_counter() - t0) * 1e3

    def _embed_text(self, text: str) -> tuple[Any, float]:
        t0 = time.perf_counter()
        with self._embed_lock:
            v = self.embedder.embed_texts([text])
        return v, (time.perf_counter() - t0) * 1e3

    def _add_text(self, text_id: str, text: str) -> int:
        vector, _ = self._embed_text(text)
        self.index.add([text_id], vector, [text])  # the text is the entry's "path": logged with its vector
        return len(self.index)

    def _query_body(self, request: Any, body: bytes) -> tuple[str | None, int | None]:
        """``(query text or None for an image, k from the body)``; refuses the wrong kind for this index."""
        is_json = _looks_json(request, body)
        if not self.text:
            if is_json:
                raise InputError("this index holds images, not texts; POST the query image's bytes")
            return None, None
        if not is_json:
            raise InputError('this index holds texts; POST JSON {"text": "...", "k": 10}, not an image')
        from .text import check_query_text

        doc = _json_object(body, '{"text": "...", "k": 10}')
        unknown = sorted(set(doc) - {"text", "k"})
        if unknown:
            raise InputError(f"unknown field {unknown[0]!r} in the query; send {{\"text\": \"...\", \"k\": 10}}")
        if "text" not in doc:
            raise InputError('the query has no "text"; send {"text": "...", "k": 10}')
        return check_query_text(doc["text"]), doc.get("k")

    def _search(self, vector: Any, k: int, exclude: tuple[str, ...] = ()) -> tuple[list[dict], float]:
        t0 = time.perf_counter()
        hits = self.index.search(vector, k, exclude)[0]
        return [h.to_dict() for h in hits], (time.perf_counter() - t0) * 1e3

    def _add(self, image_id: str, data: bytes) -> int:
        vector, _ = self._embed(data)  # refuses a non-image before anything is written
        self.uploads.mkdir(exist_ok=True)
        name = hashlib.sha256(data).hexdigest()[:24] + _suffix(data)
        path = self.uploads / name
        if not path.exists():
            from .._files import atomic_file

            with atomic_file(path) as tmp:
                tmp.write_bytes(data)
        self.index.add([image_id], vector, [str(path)])
        self._forget_thumb(image_id)
        return len(self.index)

    def _thumb(self, image_id: str) -> bytes:
        with self._thumbs_lock:
            if image_id in self._thumbs:
                self._thumbs.move_to_end(image_id)
                return self._thumbs[image_id]
        from PIL import Image, ImageOps

        path = self.index.path_of(image_id)
        try:
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img).convert("RGB")
                img.thumbnail((THUMB_PX, THUMB_PX))
                out = io.BytesIO()
                img.save(out, "JPEG", quality=85)
        except (OSError, ValueError) as exc:
            raise UnknownIdError(f"the image of id {image_id!r} cannot be read from {path!r} ({exc.__class__.__name__})"
                                 "; it was moved or deleted: remove it from the index or restore the file") from None
        data = out.getvalue()
        with self._thumbs_lock:
            self._thumbs[image_id] = data
            while len(self._thumbs) > _THUMB_CACHE:
                self._thumbs.popitem(last=False)
        return data

    def _forget_thumb(self, image_id: str) -> None:
        with self._thumbs_lock:
            self._thumbs.pop(image_id, None)

    # --- HTTP ---------------------------------------------------------------------------------------

    def routes(self) -> list[tuple[str, Any, list[str]]]:
        """``(path, handler, methods)`` for the server to mount (it wraps each handler's errors)."""
        from starlette.responses import HTMLResponse, JSONResponse, Response

        from ..serve.app import read_body

        def not_found(fn: Any) -> Any:
            async def wrapper(request: Any) -> Any:
                try:
                    return await fn(request)
                except UnknownIdError as exc:
                    return JSONResponse({"error": str(exc)}, 404)

            wrapper.__name__ = fn.__name__
            return wrapper

        async def page(request: Any) -> Any:
            return HTMLResponse(TEXT_PAGE if self.text else PAGE)

        async def info(request: Any) -> Any:
            i = self.index.info()
            return JSONResponse({key: i[key] for key in ("count", "kind", "dim", "model", "tuning", "modality", "data")
                                 if key in i})

        async def query(request: Any) -> Any:
            t0 = time.perf_counter()
            if request.method == "GET":
                k = _k(request)
                image_id = request.query_params.get("id")
                if not image_id:
                    raise InputError("GET /search/query needs ?id=ID; to search by " + (
                        'text, POST {"text": "...", "k": 10}' if self.text else "image, POST the image"))
                vector, embed_ms, exclude = self.index.vector(image_id), 0.0, (image_id,)
            else:
                body = bytes(await read_body(request, self.limit))
                if not body:
                    raise InputError("the request body is empty; " + (
                        'POST {"text": "...", "k": 10}' if self.text else "POST the query image's bytes"))
                text, k_given = self._query_body(request, body)
                k = _k(request, k_given)
                embed = (self._embed_text, text) if text is not None else (self._embed, body)
                (vector, embed_ms), exclude = await asyncio.to_thread(*embed), ()
            hits, search_ms = await asyncio.to_thread(self._search, vector, k, exclude)
            return JSONResponse({"k": k, "hits": hits, "embed_ms": round(embed_ms, 3),
                                 "search_ms": round(search_ms, 3),
                                 "took_ms": round((time.perf_counter() - t0) * 1e3, 3)})

        async def add(request: Any) -> Any:
            if self.text:
                raise InputError('this index holds texts; POST {"id": "ID", "text": "..."} to /search/texts')
            image_id = request.query_params.get("id", "").strip()
            if not image_id:
                raise InputError("POST /search/images needs ?id=ID naming the image")
            body = await read_body(request, self.limit)
            count = await asyncio.to_thread(self._add, image_id, bytes(body))
            return JSONResponse({"id": image_id, "count": count})

        async def add_text(request: Any) -> Any:
            if not self.text:
                raise InputError("this index holds images; POST the image's bytes to /search/images?id=ID")
            doc = _json_object(bytes(await read_body(request, self.limit)), '{"id": "ID", "text": "..."}')
            text_id = doc.get("id")
            if not isinstance(text_id, str) or not text_id.strip():
                raise InputError('POST /search/texts needs a non-empty "id" string naming the text')
            from .text import check_query_text

            text = check_query_text(doc.get("text"))
            count = await asyncio.to_thread(self._add_text, text_id.strip(), text)
            return JSONResponse({"id": text_id.strip(), "count": count})

        async def remove(request: Any) -> Any:
            image_id = request.path_params["id"]
            if image_id not in self.index:
                raise UnknownIdError(f"no {self.index.modality} with id {image_id!r} in the index")
            await asyncio.to_thread(self.index.remove, [image_id])
            self._forget_thumb(image_id)
            return JSONResponse({"id": image_id, "removed": True, "count": len(self.index)})

        async def thumb(request: Any) -> Any:
            if self.text:
                raise InputError("a text index has no thumbnails; its hits carry their text")
            data = await asyncio.to_thread(self._thumb, request.path_params["id"])
            return Response(data, 200, {"Cache-Control": "max-age=60"}, "image/jpeg")

        return [
            ("/search", page, ["GET"]),
            ("/search/info", info, ["GET"]),
            ("/search/query", not_found(query), ["GET", "POST"]),
            ("/search/images", add, ["POST"]),
            ("/search/texts", add_text, ["POST"]),
            ("/search/images/{id:path}/thumb", not_found(thumb), ["GET"]),
            ("/search/images/{id:path}", not_found(remove), ["DELETE"]),
            ("/search/texts/{id:path}", not_found(remove), ["DELETE"]),
        ]

    def close(self) -> None:
        """Checkpoint the index, release it and the model's session."""
        self.index.close()
        self.embedder.close()
