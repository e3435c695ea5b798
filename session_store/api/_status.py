"""The one place where session-store exceptions become gRPC statuses (with rich error details)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from session_store.errors import ERROR_DOMAIN, SessionStoreError, UnavailableError

RETRY_DELAY_MS = 50
"""Suggested client back-off on UNAVAILABLE, sent as google.rpc.RetryInfo."""


def to_status(exc: SessionStoreError) -> grpc.Status:
    """A gRPC status with ErrorInfo(reason, domain) and, for retryable errors, RetryInfo."""
    code = grpc.StatusCode[exc.code]
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN))
    details.append(info)
    if isinstance(exc, UnavailableError):
        retry = any_pb2.Any()
        retry.Pack(
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=RETRY_DELAY_MS * 1_000_000))
        )
        details.append(retry)
    status = status_pb2.Status(code=code.value[0], message=exc.message, details=details)
    return rpc_status.to_status(status)
