//! An mTLS echo client whose identity comes from the Lanyard agent.
//!
//! It fetches its X.509-SVID, the trust bundle and the CRL from the
//! Workload API, accepts only the server SPIFFE ID given with `--server-id`,
//! sends each `--message` (or each line of stdin) and prints the echo.
//!
//! ```text
//! cargo run --example mtls_echo_client -- \
//!     --socket unix:///run/lanyard/agent/api.sock \
//!     --connect 127.0.0.1:8443 --server-id spiffe://example.org/echo/server \
//!     --message hello
//! ```
//!
//! The socket defaults to `SPIFFE_ENDPOINT_SOCKET`. A refused handshake
//! (for example "certificate revoked") exits with status 1.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    process::ExitCode,
    sync::Arc,
};

use lanyard_mtls::{Authorizer, WorkloadSource, peer_spiffe_id};
use rustls_pki_types::ServerName;

const USAGE: &str = "usage: mtls_echo_client [--socket PATH|unix:URI] [--connect ADDR] --server-id SPIFFE_ID [--message TEXT ...]";

struct Args {
    socket: Option<String>,
    connect: SocketAddr,
    server_id: lanyard_identity::SpiffeId,
    messages: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut socket = None;
    let mut connect = SocketAddr::from(([127, 0, 0, 1], 8443));
    let mut server_id = None;
    let mut messages = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--socket" => socket = Some(value()?),
            "--connect" => {
                let v = value()?;
                connect = v
                    .parse()
                    .map_err(|e| format!("--connect {v:?}: {e}; expected HOST:PORT"))?;
            }
            "--server-id" => {
                let v = value()?;
                server_id = Some(v.parse().map_err(|e| format!("--server-id {v:?}: {e}"))?);
            }
            "--message" => messages.push(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let server_id = server_id.ok_or("--server-id is required: which server may answer")?;
    Ok(Args {
        socket,
        connect,
        server_id,
        messages,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(reason) => {
            if !reason.is_empty() {
                eprintln!("mtls_echo_client: {reason}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mtls_echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let source = match &args.socket {
        Some(socket) => WorkloadSource::connect(socket).await?,
        None => WorkloadSource::from_env().await?,
    };
    let config = Arc::new(source.client_config(Authorizer::exact([args.server_id]))?);
    let (connect, messages) = (args.connect, args.messages);
    // rustls' blocking stream keeps this example free of extra dependencies.
    let result = tokio::task::spawn_blocking(move || echo(config, connect, messages)).await?;
    source.shutdown().await;
    result.map_err(|e| explain(e).into())
}

/// Names the revocation cases plainly; everything else as rustls says it.
fn explain(e: std::io::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::AlertReceived(AlertDescription::CertificateRevoked)) => {
            "certificate revoked: the server refused this client's SVID".into()
        }
        Some(Error::InvalidCertificate(CertificateError::Revoked)) => {
            "certificate revoked: the server's SVID is on the trust domain's CRL".into()
        }
        _ => e.to_string(),
    }
}

fn echo(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    messages: Vec<String>,
) -> std::io::Result<()> {
    let mut tcp = TcpStream::connect(addr)?;
    // SPIFFE peers are authenticated by SPIFFE ID; the name is a placeholder.
    let name = ServerName::try_from("lanyard.invalid").map_err(std::io::Error::other)?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    let server = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or_else(|| std::io::Error::other("the server presented no certificate"))?;
    let server = peer_spiffe_id(server).map_err(std::io::Error::other)?;

    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let mut accepted = false;
    let mut send = |text: &str| -> std::io::Result<()> {
        tls.get_mut().write_all(format!("{text}\n").as_bytes())?;
        tls.get_mut().flush()?;
        let mut echoed = String::new();
        // In TLS 1.3 the server judges the client certificate after the
        // client's handshake ends: a refusal (e.g. revoked) shows up here,
        // so "connected" is only claimed once the first echo is back.
        if tls.read_line(&mut echoed)? == 0 {
            return Err(std::io::Error::other("the server closed the connection"));
        }
        if !accepted {
            accepted = true;
            println!("connected to {server}");
        }
        println!("echo: {}", echoed.trim_end());
        Ok(())
    };
    if messages.is_empty() {
        for line in std::io::stdin().lock().lines() {
            send(&line?)?;
        }
    } else {
        for message in &messages {
            send(message)?;
        }
    }
    tls.get_mut().conn.send_close_notify();
    let _ = tls.get_mut().flush();
    Ok(())
}
