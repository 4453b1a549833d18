"""A gRPC client that knows no proto file: it lists an agent's services by
server reflection, builds the Lookup request from the reflected
descriptors, calls it, and asks the standard health service.

Usage: grpc_reflect.py HOST:PORT NAME
Prints JSON: {"services": [...], "lookup": {...} or {"error": CODE},
"health": {"": STATUS, "muster.v1.Directory": STATUS}}
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> None:
    addr, name = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(addr) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName("muster.v1.Directory").FindMethodByName("Lookup")
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        lookup = channel.unary_unary(
            "/muster.v1.Directory/Lookup",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        try:
            reply = lookup(request_class(name=name), timeout=5)
            looked_up = json_format.MessageToDict(reply, preserving_proto_field_name=True)
        except grpc.RpcError as error:
            looked_up = {"error": error.code().name}
        health = health_pb2_grpc.HealthStub(channel)
        statuses = {}
        for service in ["", "muster.v1.Directory"]:
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(json.dumps({"services": services, "lookup": looked_up, "health": statuses}))


if __name__ == "__main__":
    main()
