//! The server's outbound HTTP: the ticket check and the task webhook POST
//! JSON to a configured URL.
//!
//! The ticket check's answer grants access and a webhook carries task
//! details, so a remote endpoint is reached only over `https://`, with its
//! certificate checked against `[tasks] https_ca_file` (the system's CA
//! bundle by default); plain `http://` is accepted on a loopback host only
//! (a local service, or a TLS proxy on the same machine).

use std::{path::Path, sync::Arc};

use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite};

/// The longest response body kept (and recorded).
const MAX_BODY: usize = 4096;

/// A checked endpoint URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `https://` (else plain HTTP on a loopback host).
    pub tls: bool,
    /// The host as written (`[::1]` keeps its brackets).
    pub host: String,
    pub port: u16,
    /// The path (and query), at least `/`.
    pub path: String,
}

/// Checks an endpoint URL: `https://HOST[:PORT]/PATH`, or `http://` on
/// 127.0.0.1, localhost or [::1].
pub(crate) fn endpoint(url: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "{url:?} is neither an https:// URL nor an http:// URL on a loopback host"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority
        .rsplit_once(':')
        .filter(|(h, _)| !h.ends_with(':'))
    {
        Some((h, p)) if !p.ends_with(']') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: the port {p:?} is not a number"))?,
        ),
        _ => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    if !tls && !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(format!(
            "{url:?}: plain http is accepted only on a loopback host (127.0.0.1, localhost, [::1]); \
             use https:// for a remote endpoint"
        ));
    }
    Ok(Endpoint {
        tls,
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// POSTs `body` (JSON) to `url` with `headers`, checking an https
/// endpoint's certificate against the CAs in `ca_file`; returns the status
/// and at most [`MAX_BODY`] bytes of the body.
pub(crate) async fn post_json(
    url: &str,
    ca_file: &Path,
    body: String,
    headers: &[(&'static str, String)],
) -> Result<(u16, String), String> {
    let target = endpoint(url)?;
    let bare = target.host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((bare, target.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", target.host, target.port))?;
    let request = request(&target, body, headers)?;
    if !target.tls {
        return exchange(TokioIo::new(tcp), request, url).await;
    }
    let roots = roots(ca_file)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from(bare.to_owned())
        .map_err(|e| format!("{url:?}: {:?} is not a TLS server name ({e})", target.host))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {}:{}: {e}", target.host, target.port))?;
    exchange(TokioIo::new(tls), request, url).await
}

/// The CAs an https endpoint's certificate must chain to.
fn roots(ca_file: &Path) -> Result<rustls::RootCertStore, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("tasks.https_ca_file {}: {e}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "tasks.https_ca_file {} holds no usable CA certificate",
            ca_file.display()
        ));
    }
    Ok(roots)
}

type Request = hyper::Request<Full<std::io::Cursor<Vec<u8>>>>;

fn request(
    target: &Endpoint,
    body: String,
    headers: &[(&'static str, String)],
) -> Result<Request, String> {
    let mut request = hyper::Request::post(target.path.as_str())
        .header(
            hyper::header::HOST,
            format!("{}:{}", target.host, target.port),
        )
        .header(hyper::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    request
        .body(Full::new(std::io::Cursor::new(body.into_bytes())))
        .map_err(|e| e.to_string())
}

async fn exchange<S>(io: TokioIo<S>, request: Request, url: &str) -> Result<(u16, String), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake with {url}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP client connection ended");
        }
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request to {url}: {e}"))?;
    let status = response.status().as_u16();
    let bytes = http_body_util::Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("response from {url}: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).trim().to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_and_http_only_on_loopback() {
        let e = endpoint("https://tickets.example.org/api/check?x=1").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.path.as_str()),
            (true, "tickets.example.org", 443, "/api/check?x=1")
        );
        assert_eq!(endpoint("http://127.0.0.1:8090/check").unwrap().port, 8090);
        assert_eq!(endpoint("http://[::1]:81").unwrap().host, "[::1]");
        assert_eq!(endpoint("http://localhost").unwrap().path, "/");
        for bad in [
            "http://tickets.example.org/check",
            "ftp://127.0.0.1/",
            "https://",
            "http://127.0.0.1:x/",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    /// A real HTTPS endpoint on 127.0.0.1 with a certificate for
    /// `localhost` from a CA of the test's own: the answer arrives only
    /// when that CA is the configured one.
    #[tokio::test]
    async fn https_endpoints_are_checked_against_the_configured_cas() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0; 4096];
                    let _ = tls.read(&mut buf).await;
                    let body = r#"{"allow":true,"reason":"CHG-1 is open"}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ca.pem");
        std::fs::write(&ours, ca_cert.pem()).unwrap();
        let url = format!("https://localhost:{port}/check");
        let (status, body) = post_json(&url, &ours, "{}".into(), &[]).await.unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"allow":true,"reason":"CHG-1 is open"}"#)
        );

        // Another CA: the handshake fails, nothing is read from the endpoint.
        let other_key = rcgen::KeyPair::generate().unwrap();
        let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let theirs = dir.path().join("other.pem");
        std::fs::write(&theirs, other.self_signed(&other_key).unwrap().pem()).unwrap();
        let err = post_json(&url, &theirs, "{}".into(), &[])
            .await
            .unwrap_err();
        assert!(err.contains("TLS with localhost"), "{err}");
        let err = post_json(&url, &dir.path().join("missing.pem"), "{}".into(), &[])
            .await
            .unwrap_err();
        assert!(err.contains("https_ca_file"), "{err}");
    }
}
