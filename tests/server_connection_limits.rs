//! End to end: what idle and half-open clients can hold of the server's TCP
//! listeners (issue 11, item 4). Half-sent HTTP requests, silent HTTP
//! connections and TCP connections that never start TLS are closed after
//! the configured timeouts; past `max_connections` new connections are
//! closed at once while the admin socket still answers, even with the
//! server's descriptors limited.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use common::{
    Server,
    agent::{Agent, eventually},
    http_get,
    spawned::{spawn_logged, under_fd_limit, wait_until},
};

/// A server whose `[limits]` table is `limits`.
fn server_with_limits(limits: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("server.toml");
    std::fs::write(&cfg, format!("[limits]\n{limits}")).unwrap();
    let mut server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    server.keep.push(dir);
    server
}

/// Whether the server has closed `conn`: reads to the end (an answer such
/// as a 408 may come first), waiting at most `wait`.
fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    conn.set_read_timeout(Some(wait)).unwrap();
    let mut sink = Vec::new();
    match conn.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("reading a held connection: {e}"),
    }
}

/// Whether the server has closed `conn` by now, without waiting.
fn closed_now(conn: &TcpStream) -> bool {
    conn.set_nonblocking(true).unwrap();
    let mut buf = [0_u8; 64];
    let mut reader = conn;
    let closed = match reader.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) => panic!("reading a held connection: {e}"),
    };
    conn.set_nonblocking(false).unwrap();
    closed
}

fn connect_all(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(addr).unwrap()).collect()
}

#[test]
fn idle_and_half_sent_connections_are_closed_after_their_timeouts() {
    let server = server_with_limits(
        "connection_idle_timeout = \"2s\"\nhttp_header_timeout = \"1s\"\ntls_handshake_timeout = \"1s\"\n",
    );
    let mut half_sent = TcpStream::connect(server.http_addr).unwrap();
    write!(half_sent, "GET /crl HTTP/1.1\r\nHost: lanyard\r\n").unwrap();
    let mut silent_http = TcpStream::connect(server.http_addr).unwrap();
    let mut no_tls = TcpStream::connect(server.node_addr).unwrap();
    // Without timeouts these would stay open for as long as the client likes.
    let wait = Duration::from_secs(30);
    assert!(
        closed_within(&mut half_sent, wait),
        "half-sent HTTP request kept open"
    );
    assert!(
        closed_within(&mut silent_http, wait),
        "silent HTTP connection kept open"
    );
    assert!(
        closed_within(&mut no_tls, wait),
        "Node API connection without TLS kept open"
    );

    // A complete request is still answered, and an agent's long-lived
    // Sync connection is kept (it answers the server's pings) well past
    // the idle timeout.
    http_get(server.http_addr, "/health/live");
    let agent = Agent::start(&server);
    std::thread::sleep(Duration::from_secs(6));
    assert!(agent.healthy());
    let log = agent.log();
    assert!(
        !log.contains("Sync stream failed") && !log.contains("server closed the Sync stream"),
        "{log}"
    );
}

#[test]
fn past_the_cap_new_connections_are_closed_and_the_admin_socket_answers() {
    const CAP: usize = 100;
    const EXTRA: usize = 50;
    let mut server = server_with_limits(&format!(
        "max_connections = {CAP}\nconnection_idle_timeout = \"10m\"\nhttp_header_timeout = \"10m\"\ntls_handshake_timeout = \"10m\"\n"
    ));
    // The same server, restarted with 256 descriptors, as in the issue:
    // without the cap the held connections would exhaust them.
    server.kill();
    let log = server.dir.path().join("server-limited.log");
    let mut child = spawn_logged(under_fd_limit(&server.run_command(), 256), &log);
    wait_until("lanyard-server", &mut child, &log, || {
        server.cli(&["healthcheck"]).status.success()
    });

    let mut held = Vec::new();
    for addr in [server.http_addr, server.node_addr] {
        let mut conns = connect_all(addr, CAP + EXTRA);
        // Those past the cap are closed at once, and only those.
        let closed = eventually(
            Duration::from_secs(30),
            "the connections past the cap closed",
            || {
                let closed = conns.iter().filter(|c| closed_now(c)).count();
                (closed >= EXTRA).then_some(closed)
            },
        );
        assert_eq!(closed, EXTRA, "{addr}");
        conns.retain(|c| !closed_now(c));
        assert_eq!(conns.len(), CAP, "{addr}");
        held.push(conns);
    }

    // At the cap the operator is still answered, over the admin socket.
    let token = server.cli_ok(&["token", "generate"]);
    assert_eq!(token.trim().len(), 64, "{token}");
    // A new TCP connection is closed.
    let mut late = TcpStream::connect(server.http_addr).unwrap();
    assert!(closed_within(&mut late, Duration::from_secs(30)));

    // Once clients leave, new ones are served again.
    held.clear();
    eventually(Duration::from_secs(30), "HTTP served again", || {
        let mut conn = TcpStream::connect(server.http_addr).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            conn,
            "GET /health/live HTTP/1.1\r\nHost: lanyard\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        answer.starts_with("HTTP/1.1 200").then_some(())
    });
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("connection cap reached"), "{log}");
    drop(child);
}
