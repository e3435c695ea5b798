"""The SingleUseObjects gRPC servicer (Keycloak's SingleUseObjectProvider)."""

from __future__ import annotations

from session_store.api import convert
from session_store.api.servicer import Context, rpc
from session_store.storage.single_use import SingleUseObjectRepository
from session_store.v1 import single_use_objects_pb2 as pb
from session_store.v1 import single_use_objects_pb2_grpc as pb_grpc


class SingleUseObjectsServicer(pb_grpc.SingleUseObjectsServicer):
    """Every SingleUseObjects RPC: validate, call the repository, convert the answer."""

    def __init__(self, objects: SingleUseObjectRepository) -> None:
        """Serve from this repository."""
        self._objects = objects

    @rpc
    async def PutSingleUseObject(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.PutSingleUseObjectRequest, context: Context
    ) -> pb.PutSingleUseObjectResponse:
        """See the proto."""
        await self._objects.put_single_use_object(
            convert.realm(request.realm),
            convert.single_use_key(request.key),
            convert.single_use_notes(request.notes),
            lifespan_seconds=convert.lifespan(request.lifespan_seconds),
        )
        return pb.PutSingleUseObjectResponse(stored=True)

    @rpc
    async def PutSingleUseObjectIfAbsent(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.PutSingleUseObjectRequest, context: Context
    ) -> pb.PutSingleUseObjectResponse:
        """See the proto."""
        stored = await self._objects.put_single_use_object_if_absent(
            convert.realm(request.realm),
            convert.single_use_key(request.key),
            lifespan_seconds=convert.lifespan(request.lifespan_seconds),
        )
        return pb.PutSingleUseObjectResponse(stored=stored)

    @rpc
    async def GetSingleUseObject(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.SingleUseObjectKey, context: Context
    ) -> pb.SingleUseObject:
        """See the proto."""
        found = await self._objects.get_single_use_object(
            convert.realm(request.realm), convert.single_use_key(request.key)
        )
        return convert.single_use_to_proto(found)

    @rpc
    async def TakeSingleUseObject(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.SingleUseObjectKey, context: Context
    ) -> pb.SingleUseObject:
        """See the proto."""
        taken = await self._objects.take_single_use_object(
            convert.realm(request.realm), convert.single_use_key(request.key)
        )
        return convert.single_use_to_proto(taken)

    @rpc
    async def ReplaceSingleUseObject(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.ReplaceSingleUseObjectRequest, context: Context
    ) -> pb.ReplaceSingleUseObjectResponse:
        """See the proto."""
        replaced = await self._objects.replace_single_use_object(
            convert.realm(request.realm),
            convert.single_use_key(request.key),
            convert.single_use_notes(request.notes),
        )
        return pb.ReplaceSingleUseObjectResponse(replaced=replaced)

    @rpc
    async def ContainsSingleUseObject(  # noqa: N802 - gRPC method names are the proto's
        self, request: pb.SingleUseObjectKey, context: Context
    ) -> pb.ContainsSingleUseObjectResponse:
        """See the proto."""
        present = await self._objects.contains_single_use_object(
            convert.realm(request.realm), convert.single_use_key(request.key)
        )
        return pb.ContainsSingleUseObjectResponse(present=present)
