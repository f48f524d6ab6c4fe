"""A request's time outside the engine: its fixed path through the API server and the server's CPU work on
its prompt, images and output (what ``--api-server-count`` processes queue for)."""

from __future__ import annotations

from typing import Any

from planner.catalog.calibration_schema import Calibration
from planner.spec.shape import RequestShape


def frontend_ms(cal: Calibration, input_megapixels: float, processed_megapixels: float, images: int = 0) -> float:
    """Time from the client's send to the engine's queue, and from the engine's first token back to the
    client, that no engine step holds: the request's fixed path (HTTP, tokenising, hand-off to the engine,
    streaming the token back: ``request_latency_ms``) plus the API server's CPU on its images (decode, resize,
    normalise, patchify: a fixed part per image and a part per megapixel). Part of TTFT and e2e. Modelled as
    a delay per request, not a queue: at high image rates one API-server process can saturate first
    (vLLM's --api-server-count)."""
    return (cal.value("request_latency_ms") + cal.value("frontend_ms_per_image") * images
            + cal.value("frontend_ms_per_input_megapixel") * input_megapixels
            + cal.value("frontend_ms_per_processed_megapixel") * processed_megapixels)


def api_server_ms(cal: Calibration, input_tokens: Any, output_tokens: Any, images: Any, input_megapixels: Any) -> Any:
    """How long one request holds one API-server process (vLLM's ``--api-server-count`` processes, each one
    Python event loop): tokenising its prompt, decoding and preprocessing its images, streaming its output tokens
    back (scalars, or numpy arrays of one value per request). The load models queue requests for these processes
    (first come, first served); at low load the wait is nil and the request's latency outside the engine is
    ``frontend_ms``'s; near saturation the queue caps the replica's throughput at
    ``api_server_count / api_server_ms`` (planner.calibrate.api_server)."""
    return (api_input_ms(cal, input_tokens, images, input_megapixels)
            + api_stream_ms(cal, output_tokens))


def api_input_ms(cal: Calibration, input_tokens: Any, images: Any, input_megapixels: Any) -> Any:
    """The part of ``api_server_ms`` done before the engine sees the request: the request's fixed path,
    tokenising its prompt, decoding and preprocessing its images."""
    return (cal.value("api_server_ms_per_request")
            + cal.value("api_server_ms_per_input_token") * input_tokens
            + cal.value("api_server_ms_per_image") * images
            + cal.value("api_server_ms_per_megapixel") * input_megapixels)


def api_stream_ms(cal: Calibration, output_tokens: Any) -> Any:
    """The part of ``api_server_ms`` done while the request streams: detokenising and sending its output
    tokens, from its first token to its last."""
    return cal.value("api_server_ms_per_output_token") * output_tokens



def shape_frontend_ms(cal: Calibration, shape: RequestShape) -> float:
    """The request's time outside the engine: its fixed path and the API server's image work
    (``frontend_ms``)."""
    return frontend_ms(cal, shape.input_megapixels, shape.processed_megapixels, shape.images)
