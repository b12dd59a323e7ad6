"""Online inference: the daemon answers inference requests that arrive over MQTT.

Topics: ``<prefix>/<device>/infer`` for one device and, with ``[online] group``, the shared
subscription ``$share/<group>/<prefix>/fleet/<group>/infer``: the broker hands each request
published to ``<prefix>/fleet/<group>/infer`` to one daemon of the group (edge adds no protocol
of its own). ``edge request`` is the client.

An MQTT 5 request is the image itself (JPEG or PNG bytes) with the properties Response Topic
(required), Correlation Data, Content Type (``image/jpeg`` or ``image/png``; unset = guessed
from the bytes), Message Expiry Interval, and the optional User Properties ``source`` (the name
the result's ``source`` field shows) and ``model`` (the model the client expects). The answer,
published to the Response Topic with the same Correlation Data, Content Type
``application/json`` and the User Properties ``device`` and ``status`` (``ok`` / ``error``), is
the JSON ``edge infer`` prints for that image, or ``{"error": REASON, "message": ...,
"device": ...}``.

An MQTT 3.1.1 client has no properties, so it sends a JSON envelope on the same topics:
``{"image": BASE64, "response_topic": ..., "correlation": ..., "ttl_s": ... or "expires_at":
UNIX_SECONDS, "source": ..., "model": ...}`` (only ``image`` and ``response_topic`` are
required) and gets ``{"correlation": ..., "device": ..., "result": {...}}`` or ``{"correlation":
..., "device": ..., "error": REASON, "message": ...}`` back. ``ttl_s`` counts from the request's
arrival at the daemon (3.1.1 cannot say when it was sent).

Error reasons: ``too_large`` (over ``max_image_bytes``), ``unsupported_type`` (a Content Type
other than JPEG or PNG), ``undecodable``, ``unknown_model``, ``busy`` (the queue is full),
``internal``. A message without a response topic cannot be answered: it is counted
(``unanswerable``) and logged. A request whose expiry has passed when it arrives or when its
turn comes is dropped unanswered and counted (``expired``).
"""
