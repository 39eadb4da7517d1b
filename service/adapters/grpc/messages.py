"""The KServe v2 gRPC messages, built from kserve_v2.proto's descriptor set in a private pool.

protoc's generated modules would register `inference.*` in protobuf's default descriptor pool,
where tritonclient registers its own copies of the same names, and one process could not hold
both (a test driving this server with tritonclient, a program embedding the server next to a
client). A private pool keeps ours apart. `make protos` regenerates kserve_v2.desc.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

SERVICE = "inference.GRPCInferenceService"

_pool = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString((Path(__file__).parent / "kserve_v2.desc").read_bytes()).file:
    _pool.Add(_file)


def message(name: str) -> type[Message]:
    """The class of message `inference.<name>`."""
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"inference.{name}"))


def methods() -> dict[str, MethodDescriptor]:
    """The service's RPCs by name, with their request and response types."""
    return dict(_pool.FindServiceByName(SERVICE).methods_by_name)
