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

use clap::Parser;
use lanyard_mtls::{Authorizer, WorkloadSource, peer_spiffe_id};
use rustls_pki_types::ServerName;

/// An mTLS echo client whose identity comes from the Lanyard agent.
#[derive(Parser)]
struct Args {
    /// The Workload API socket (a path or a unix: URI).
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    socket: Option<String>,
    /// The echo server to connect to.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8443")]
    connect: SocketAddr,
    /// The SPIFFE ID the server must present.
    #[arg(long, value_name = "SPIFFE_ID")]
    server_id: lanyard_identity::SpiffeId,
    /// A message to send (repeatable); without any, each line of stdin.
    #[arg(long = "message", value_name = "TEXT")]
    messages: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
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
