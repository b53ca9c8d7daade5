"""The grpcio client of tests/grpc.rs: calls `test.Echo` through rproxy and prints one JSON
object of what each call got.

    python3 grpc_call.py TARGET [CA_FILE SERVER_NAME] [--deadline SECONDS]
    python3 grpc_call.py TARGET --load CALLS
that many `Peer` calls, 8 at a time: how many ended with each code, and how many upstream
connections (the addresses the service saw) carried them.
"""
import json
import sys
from collections import Counter
from concurrent import futures

import grpc


def call(channel, deadline):
    out = {}
    unary = channel.unary_unary("/test.Echo/Unary")
    reply, c = unary.with_call(b"hi", timeout=10)
    out["unary"] = reply.decode()
    out["unary_trailer"] = dict(c.trailing_metadata()).get("x-echo-trailer")
    out["server_stream"] = [r.decode() for r in channel.unary_stream("/test.Echo/ServerStream")(b"4", timeout=10)]
    out["client_stream"] = channel.stream_unary("/test.Echo/ClientStream")(iter([b"a", b"b", b"c"]), timeout=10).decode()
    out["bidi"] = [r.decode() for r in channel.stream_stream("/test.Echo/Bidi")(iter([b"x", b"y"]), timeout=10)]
    try:
        channel.unary_unary("/test.Echo/Slow")(b"3", timeout=deadline)
        out["slow"] = "OK"
    except grpc.RpcError as e:
        out["slow"] = e.code().name
        out["slow_details"] = e.details()
    return out


def load(channel, calls):
    peer = channel.unary_unary("/test.Echo/Peer")

    def one(i):
        try:
            return "OK", peer(b"", timeout=20).decode()
        except grpc.RpcError as e:
            return f"{e.code().name}: {e.details()}", None

    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(calls)))
    codes = dict(Counter(code for code, _ in results))
    return {"codes": codes, "connections": len({p for _, p in results if p})}


def main():
    args = sys.argv[1:]
    deadline = 1.0
    if "--deadline" in args:
        i = args.index("--deadline")
        deadline = float(args[i + 1])
        del args[i : i + 2]
    calls = 0
    if "--load" in args:
        i = args.index("--load")
        calls = int(args[i + 1])
        del args[i : i + 2]
    only_unary = "--only-unary" in args
    args = [a for a in args if a != "--only-unary"]
    target = args[0]
    if len(args) > 2:
        with open(args[1], "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(target, creds, options=(("grpc.ssl_target_name_override", args[2]),))
    else:
        channel = grpc.insecure_channel(target)
    if calls:
        print(json.dumps(load(channel, calls)))
        return
    if only_unary:
        try:
            channel.unary_unary("/test.Echo/Unary")(b"hi", timeout=5)
            print(json.dumps({"unary": "OK"}))
        except grpc.RpcError as e:
            print(json.dumps({"unary": e.code().name, "details": e.details()}))
        return
    print(json.dumps(call(channel, deadline)))


if __name__ == "__main__":
    main()
