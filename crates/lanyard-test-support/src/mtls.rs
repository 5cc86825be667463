//! mTLS helpers for end-to-end tests: an echo service in the test process,
//! one round trip as a client, and waiting for a refused handshake.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// An mTLS echo service with the given configuration; returns its address.
pub async fn serve(config: rustls::ServerConfig) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut line = String::new();
                let (r, mut w) = tokio::io::split(&mut tls);
                if BufReader::new(r).read_line(&mut line).await.is_ok() {
                    let _ = w.write_all(format!("echo: {line}").as_bytes()).await;
                }
            });
        }
    });
    addr
}

/// One round trip; the error text names a TLS alert when there is one.
pub async fn echo(config: Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<String, String> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let io = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls_pki_types::ServerName::try_from("svc.invalid").unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"hi\n").await?;
        let mut line = String::new();
        BufReader::new(&mut tls).read_line(&mut line).await?;
        if line.is_empty() {
            return Err(std::io::Error::other("closed without a reply"));
        }
        Ok::<_, std::io::Error>(line)
    };
    match tokio::time::timeout(Duration::from_secs(5), io).await {
        Err(_) => Err("timed out".into()),
        Ok(Ok(line)) => Ok(line),
        Ok(Err(e)) => Err(
            match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::AlertReceived(
                    rustls::AlertDescription::CertificateRevoked,
                )) => "certificate revoked".into(),
                Some(other) => other.to_string(),
                None => e.to_string(),
            },
        ),
    }
}

/// Handshakes until one fails with a message containing one of `expected`;
/// returns how long after `since` that was.
pub async fn until_refused(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    expected: &[&str],
    since: Instant,
) -> Duration {
    loop {
        match echo(config.clone(), addr).await {
            Err(e) if expected.iter().any(|x| e.contains(x)) => return since.elapsed(),
            other => {
                assert!(
                    since.elapsed() < Duration::from_secs(20),
                    "still {other:?} after 20 s"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}
