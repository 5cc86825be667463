//! A tonic channel over rustls with a caller-supplied client configuration
//! (so the SPIFFE verifiers above decide who the server may be).

use std::{net::SocketAddr, sync::Arc};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

use crate::MtlsError;

/// Connects a gRPC channel to `addr` over TLS with `config`. The TLS server
/// name sent is a placeholder: SPIFFE peers are authenticated by SPIFFE ID.
pub async fn tls_channel(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, MtlsError> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| MtlsError::Channel(e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(5));
    endpoint
        .connect_with_connector(tower::service_fn(move |_uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from("lanyard.invalid")
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| MtlsError::Channel(format!("{e}: {}", crate::error::source_chain(&e))))
}
