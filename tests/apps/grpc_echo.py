"""A Python grpcio service behind rproxy for tests/grpc.rs: `test.Echo` with the four kinds of
call on raw bytes (no generated code), a slow call for deadlines, and the standard
`grpc.health.v1.Health` service. `Peer` answers with the address the call came from.

    python3 grpc_echo.py PORT [CERT KEY] [--not-serving] [--max-age MS]
TLS (ALPN h2) when a certificate is given; `--not-serving`: the health service says NOT_SERVING;
`--max-age`: every connection is closed after MS milliseconds with gRPC's graceful GOAWAY
(`grpc.max_connection_age_ms`, what Kubernetes deployments use to rebalance).
"""
import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def unary(request, context):
    context.set_trailing_metadata((("x-echo-trailer", "unary"),))
    return b"echo:" + request


def server_stream(request, context):
    for i in range(int(request or b"3")):
        yield b"part-%d" % i


def client_stream(requests, context):
    return b"+".join(requests)


def bidi(requests, context):
    for r in requests:
        yield b"echo:" + r


def peer(request, context):
    return context.peer().encode()


def slow(request, context):
    time.sleep(float(request or b"5"))
    return b"late"


def main():
    not_serving = "--not-serving" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--not-serving"]
    options = []
    if "--max-age" in args:
        i = args.index("--max-age")
        options.append(("grpc.max_connection_age_ms", int(args[i + 1])))
        options.append(("grpc.max_connection_age_grace_ms", 30000))
        del args[i : i + 2]
    port = args[0]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Peer": grpc.unary_unary_rpc_method_handler(peer),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    checker = health.HealthServicer()
    status = health_pb2.HealthCheckResponse.NOT_SERVING if not_serving else health_pb2.HealthCheckResponse.SERVING
    checker.set("", status)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    addr = f"127.0.0.1:{port}"
    if len(args) > 2:
        with open(args[1], "rb") as c, open(args[2], "rb") as k:
            creds = grpc.ssl_server_credentials(((k.read(), c.read()),))
        server.add_secure_port(addr, creds)
    else:
        server.add_insecure_port(addr)
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
