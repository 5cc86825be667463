"""A workload that changes its credentials between two calls on one
Workload API connection (issue 14: reuse of an attestation must end on a
credential change).

    drop_privileges.py AGENT_SOCKET RELAY_SOCKET UID GID

Connects to the agent, then relays that one connection, byte for byte, to
the first client of RELAY_SOCKET, so that the test's own gRPC client makes
its calls over this process's connection. On the line "drop" on standard
input it sets its real, effective and saved ids to UID and GID (it must
start as root) and answers "dropped" on standard output. It keeps relaying
until either side closes.
"""

import os
import select
import signal
import socket
import sys


def main():
    agent, relay_path, uid, gid = sys.argv[1:5]
    # Never outlive the test, whatever happens to it.
    signal.alarm(60)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(agent)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(relay_path)
    server.listen(1)
    client, _ = server.accept()
    pair = {client: conn, conn: client}
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([*pair, stdin], [], [])
        for fd in readable:
            if fd == stdin:
                line = sys.stdin.readline().strip()
                if line == "drop":
                    os.setgroups([])
                    os.setresgid(int(gid), int(gid), int(gid))
                    os.setresuid(int(uid), int(uid), int(uid))
                    print("dropped", flush=True)
                elif line == "":
                    return
                continue
            data = fd.recv(65536)
            if not data:
                return
            pair[fd].sendall(data)


main()
