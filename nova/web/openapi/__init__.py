"""The OpenAPI 3.1 document of Nova's JSON API (served at /api/openapi.json, shown at
/api/docs): the schemas once in ``SCHEMAS``
(schemas.py), then one ``Endpoint`` per route in ``ENDPOINTS`` (endpoints.py); document.py
builds the whole document from them.

A new endpoint is one more ``Endpoint`` (and its schemas): tests/system/test_openapi.py fails while
a route under /api/ is missing here or a method it answers is not documented.

nova's conventions are stated once, in ``DESCRIPTION``, and each endpoint's entry follows
them: arguments in the form field ``request-json``; answers JSON sent as ``text/plain``;
refusals HTTP 200 with ``{"status": "error", "errormessage": ...}``; a missing or private id
a JSON 404.
"""

from nova.web.openapi.document import document

__all__ = ["document"]
