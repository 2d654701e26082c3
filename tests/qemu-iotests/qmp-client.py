#!/usr/bin/env python3
"""A QMP client for iotests: qmp-client.py SOCKET < script

Each script line is sent as is (so malformed JSON can be tested), then a
marker command; every message received before the marker's reply is
printed, one per line, in the server's member order. Timestamps of events
are checked and printed as "TIMESTAMP", thread ids as "TID".

Directives (lines starting with '#'):
  # text          printed as a comment
  #raw TEXT       send TEXT with no newline and no marker; print nothing
  #sync           send only the marker, print what arrives before its reply
  #wait EVENT     print messages until the event EVENT arrives (at once if
                  it arrived since the last #wait for it)
  #close          close the connection (a new one is opened by #open)
  #open           connect again and print the greeting
  #eof            read until the server closes the connection
A line with "quit" gets no marker: the client reads until the server closes.
"""
import json
import socket
import sys

MARKER_ID = "__marker__"
seen_events = []


class Conn:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def recv_msg(self):
        while b"\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                return None
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line.decode())


def show(msg):
    if "event" in msg:
        seen_events.append(msg["event"])
    if "timestamp" in msg:
        ts = msg["timestamp"]
        assert set(ts) == {"seconds", "microseconds"}, ts
        assert ts["seconds"] > 1600000000 and 0 <= ts["microseconds"] < 1000000, ts
        msg["timestamp"] = "TIMESTAMP"
    ret = msg.get("return")
    if isinstance(ret, list):
        for item in ret:
            if isinstance(item, dict) and "thread-id" in item:
                assert item["thread-id"] > 0
                item["thread-id"] = "TID"
    print(json.dumps(msg, separators=(", ", ": ")))


def until_marker(c):
    while True:
        m = c.recv_msg()
        if m is None:
            print("(connection closed)")
            return False
        if m.get("id") == MARKER_ID:
            return True
        show(m)


def marker(c):
    c.send(('{"execute": "query-version", "id": "%s"}\n' % MARKER_ID).encode())


def main():
    path = sys.argv[1]
    c = Conn(path)
    show(c.recv_msg())
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            continue
        if line.startswith("# "):
            print(line)
            continue
        if line.startswith("#raw "):
            c.send(line[5:].encode())
            continue
        if line == "#sync":
            marker(c)
            until_marker(c)
            continue
        if line.startswith("#wait "):
            want = line[6:]
            if want in seen_events:
                seen_events.remove(want)
                continue
            while True:
                m = c.recv_msg()
                if m is None:
                    print("(connection closed)")
                    break
                show(m)
                if m.get("event") == want:
                    seen_events.remove(want)
                    break
            continue
        if line == "#close":
            c.sock.close()
            continue
        if line == "#open":
            c = Conn(path)
            show(c.recv_msg())
            continue
        if line == "#eof":
            while True:
                m = c.recv_msg()
                if m is None:
                    print("(connection closed)")
                    break
                show(m)
            continue
        print(">", line)
        c.send(line.encode() + b"\n")
        if '"quit"' in line:
            # Nothing after quit is answered: read to the end.
            while True:
                m = c.recv_msg()
                if m is None:
                    print("(connection closed)")
                    return
                show(m)
        marker(c)
        if not until_marker(c):
            return


main()
