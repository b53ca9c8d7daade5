"""A WebSocket-over-HTTP/2 client (RFC 8441) for tests/websocket_h2.rs, driven line by line.

Connects to rproxy over h2c, or over TLS with ALPN h2 (`--tls CAFILE --name NAME`), then reads
commands from stdin and answers each with one JSON line on stdout:

  settings                 -> {"enable_connect_protocol": <the server's value or null>}
  open PATH [SUBPROTOCOL]  -> extended CONNECT :protocol websocket on a new stream:
                              {"status": N, "headers": {...}} or {"reset": CODE}
  connect AUTHORITY        -> a plain CONNECT: {"status": N} or {"reset": CODE}
  protocol NAME PATH       -> an extended CONNECT with another :protocol: as `open`
  echo N TAG               -> N text messages on the open WebSocket, each echoed back:
                              {"echoed": N} or {"error": "..."}
  wait SECONDS             -> what ends the quiet stream first: {"event": "ended" | "reset" |
                              "data" | "timeout"}
  close                    -> a close frame sent, the close answered: {"closed": CODE}

Uses the `h2` and `wsproto` packages (installed with Hypercorn, tests/apps/requirements.txt).
"""

import argparse
import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, TextMessage
from wsproto.frame_protocol import CloseReason


class Graceful(h2.connection.H2Connection):
    """After a graceful GOAWAY (NO_ERROR), the streams already open go on (RFC 9113 6.8), as
    they do in browsers; the h2 package would close the whole connection."""

    def _receive_goaway_frame(self, frame):
        frames, events = super()._receive_goaway_frame(frame)
        if frame.error_code == 0:
            self.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        return frames, events


class Client:
    def __init__(self, sock, authority, scheme):
        self.sock = sock
        self.authority = authority
        self.scheme = scheme
        self.h2 = Graceful(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.flush()
        self.stream = None
        self.ws = None
        self.pending = []  # events of the WebSocket stream not yet consumed
        self.remote_settings = {}
        self.ended = False
        self.reset = None

    def flush(self):
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, deadline):
        """Reads once (until `deadline`); returns the h2 events, [] on timeout, None on EOF."""
        left = deadline - time.monotonic()
        if left <= 0:
            return []
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return []
        if not data:
            return None
        events = self.h2.receive_data(data)
        for ev in events:
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                for code, setting in ev.changed_settings.items():
                    self.remote_settings[int(code)] = setting.new_value
            if isinstance(ev, h2.events.DataReceived):
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        self.flush()
        return events

    def settings(self):
        deadline = time.monotonic() + 5
        while not self.remote_settings and time.monotonic() < deadline:
            if self.pump(deadline) is None:
                break
        code = int(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
        return {"enable_connect_protocol": self.remote_settings.get(code)}

    def request(self, headers, end_stream=False):
        """Sends a request head on a new stream; returns its answer (status or reset)."""
        self.settings()
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, headers, end_stream=end_stream)
        self.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            events = self.pump(deadline)
            if events is None:
                return sid, {"error": "connection closed"}
            for ev in events:
                if getattr(ev, "stream_id", None) != sid:
                    continue
                if isinstance(ev, h2.events.ResponseReceived):
                    hdrs = {k.decode(): v.decode() for k, v in ev.headers}
                    return sid, {"status": int(hdrs.get(":status", "0")), "headers": hdrs}
                if isinstance(ev, h2.events.StreamReset):
                    return sid, {"reset": int(ev.error_code)}
        return sid, {"error": "no answer in 10 s"}

    def connect_headers(self, path, protocol):
        return [
            (":method", "CONNECT"),
            (":protocol", protocol),
            (":scheme", self.scheme),
            (":path", path),
            (":authority", self.authority),
            ("sec-websocket-version", "13"),
            ("origin", f"{self.scheme}://{self.authority}"),
        ]

    def open(self, path, subprotocol=None):
        headers = self.connect_headers(path, "websocket")
        if subprotocol:
            headers.append(("sec-websocket-protocol", subprotocol))
        sid, answer = self.request(headers)
        if answer.get("status") == 200:
            self.stream = sid
            self.ws = Connection(ConnectionType.CLIENT)
            self.pending = []
            self.ended = False
            self.reset = None
        return answer

    def send_ws(self, event):
        self.h2.send_data(self.stream, self.ws.send(event))
        self.flush()

    def next_ws_event(self, deadline):
        """The next WebSocket event of the open stream, or a string saying why there is none."""
        while True:
            if self.pending:
                return self.pending.pop(0)
            if self.reset is not None:
                return "reset"
            if self.ended:
                return "ended"
            events = self.pump(deadline)
            if events is None:
                return "connection closed"
            if not events and time.monotonic() >= deadline:
                return "timeout"
            for ev in events:
                if getattr(ev, "stream_id", None) != self.stream:
                    continue
                if isinstance(ev, h2.events.DataReceived):
                    # After a close frame, only the stream's end may follow.
                    if ev.data and self.ws.state != ConnectionState.CLOSED:
                        self.ws.receive_data(ev.data)
                        self.pending.extend(self.ws.events())
                elif isinstance(ev, h2.events.StreamEnded):
                    self.ended = True
                elif isinstance(ev, h2.events.StreamReset):
                    self.reset = int(ev.error_code)

    def echo(self, n, tag):
        for i in range(n):
            text = f"{tag}-{i}"
            self.send_ws(Message(data=text))
            got = self.next_ws_event(time.monotonic() + 10)
            if not isinstance(got, TextMessage) or got.data != text:
                return {"error": f"message {i}: sent {text!r}, got {got!r}"}
        return {"echoed": n}

    def wait(self, seconds):
        got = self.next_ws_event(time.monotonic() + seconds)
        if isinstance(got, str):
            return {"event": got}
        return {"event": "data", "what": repr(got)}

    def close(self):
        self.send_ws(CloseConnection(code=CloseReason.NORMAL_CLOSURE))
        got = self.next_ws_event(time.monotonic() + 10)
        if isinstance(got, CloseConnection):
            return {"closed": int(got.code)}
        return {"error": f"no close answer: {got!r}"}


def connect(args):
    sock = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    if not args.tls:
        return sock, f"127.0.0.1:{args.port}", "http"
    ctx = ssl.create_default_context(cafile=args.tls)
    ctx.set_alpn_protocols(["h2"])
    tls = ctx.wrap_socket(sock, server_hostname=args.name)
    if tls.selected_alpn_protocol() != "h2":
        raise SystemExit(f"ALPN selected {tls.selected_alpn_protocol()!r}, not h2")
    return tls, f"{args.name}:{args.port}", "https"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", help="CA file to trust; TLS with ALPN h2 when given")
    parser.add_argument("--name", default="localhost", help="SNI and :authority host")
    args = parser.parse_args()
    sock, authority, scheme = connect(args)
    client = Client(sock, authority, scheme)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd, rest = words[0], words[1:]
        try:
            if cmd == "settings":
                out = client.settings()
            elif cmd == "open":
                out = client.open(rest[0], rest[1] if len(rest) > 1 else None)
            elif cmd == "connect":
                _, out = client.request(
                    [(":method", "CONNECT"), (":authority", rest[0])]
                )
            elif cmd == "protocol":
                _, out = client.request(client.connect_headers(rest[1], rest[0]))
            elif cmd == "echo":
                out = client.echo(int(rest[0]), rest[1])
            elif cmd == "wait":
                out = client.wait(float(rest[0]))
            elif cmd == "close":
                out = client.close()
            else:
                out = {"error": f"unknown command {cmd!r}"}
        except Exception as e:  # the test reads the failure, whatever it is
            out = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
