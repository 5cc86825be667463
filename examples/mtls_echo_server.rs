//! An mTLS echo server whose identity comes from the Lanyard agent.
//!
//! It fetches its X.509-SVID, the trust bundle and the CRL from the
//! Workload API, accepts only the client SPIFFE IDs given with `--allow`,
//! and echoes every line back. Rotations and revocations reach the next
//! handshake without a restart; a revoked client is refused with a
//! "certificate revoked" alert.
//!
//! ```text
//! cargo run --example mtls_echo_server -- \
//!     --socket unix:///run/lanyard/agent/api.sock \
//!     --listen 127.0.0.1:8443 --allow spiffe://example.org/echo/client
//! ```
//!
//! The socket defaults to `SPIFFE_ENDPOINT_SOCKET`.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::ExitCode,
    sync::Arc,
};

use clap::Parser;
use lanyard_mtls::{Authorizer, WorkloadSource, peer_spiffe_id};

/// An mTLS echo server whose identity comes from the Lanyard agent.
#[derive(Parser)]
struct Args {
    /// The Workload API socket (a path or a unix: URI).
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    socket: Option<String>,
    /// Where to listen.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// A client SPIFFE ID that may connect (repeatable, at least one).
    #[arg(long, value_name = "SPIFFE_ID", required = true)]
    allow: Vec<lanyard_identity::SpiffeId>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mtls_echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Listen only once the identity is there.
    let source = match &args.socket {
        Some(socket) => WorkloadSource::connect(socket).await?,
        None => WorkloadSource::from_env().await?,
    };
    let config = Arc::new(source.server_config(Authorizer::exact(args.allow))?);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let me = source
        .spiffe_id()
        .map(|id| id.to_string())
        .unwrap_or_default();
    println!("listening on {} as {me}", listener.local_addr()?);

    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, addr) = accepted?;
                let tcp = tcp.into_std()?;
                tcp.set_nonblocking(false)?;
                let config = config.clone();
                // rustls' blocking stream keeps this example free of extra
                // dependencies; each connection gets a blocking thread.
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = serve(config, tcp) {
                        println!("{addr}: {}", explain(&e));
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    source.shutdown().await;
    Ok(())
}

/// Names the revocation case plainly; everything else as rustls says it.
fn explain(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(CertificateError::Revoked)) => {
            "refused: certificate revoked (the client's SVID is on the CRL)".into()
        }
        _ => e.to_string(),
    }
}

fn serve(config: Arc<rustls::ServerConfig>, mut tcp: std::net::TcpStream) -> std::io::Result<()> {
    let mut conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    let peer = conn
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|leaf| peer_spiffe_id(leaf).map(|id| id.to_string()))
        .transpose()
        .map_err(std::io::Error::other)?
        .unwrap_or_else(|| "(no certificate)".into());
    println!("peer {peer} connected");
    let tls = rustls::StreamOwned::new(conn, tcp);
    let mut reader = BufReader::new(tls);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        println!("{peer}: {}", line.trim_end());
        reader.get_mut().write_all(line.as_bytes())?;
        reader.get_mut().flush()?;
    }
    reader.get_mut().conn.send_close_notify();
    let _ = reader.get_mut().flush();
    println!("peer {peer} disconnected");
    Ok(())
}
