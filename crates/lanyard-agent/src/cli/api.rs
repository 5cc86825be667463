//! `api fetch x509` and `api watch`: a Workload API client over the agent's
//! Unix socket, as a workload would call it.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use hyper_util::rt::TokioIo;
use lanyard_keys::{SvidKey, certificates_to_pem, pem_block, write_file_atomic};
use lanyard_proto::workload::{
    X509svidRequest, X509svidResponse, spiffe_workload_api_client::SpiffeWorkloadApiClient,
};
use rustls_pki_types::CertificateDer;
use tonic::{
    Request, Streaming,
    transport::{Channel, Endpoint},
};

use crate::{AgentError, workload_api::SECURITY_HEADER};

fn client_err(what: &str, e: impl std::fmt::Display) -> AgentError {
    AgentError::Client(format!("{what}: {e}"))
}

/// Connects to the Workload API at `socket`.
pub async fn connect(socket: &Path) -> Result<SpiffeWorkloadApiClient<Channel>, AgentError> {
    let path = socket.to_owned();
    // The URI is a placeholder: the connector dials the socket.
    let channel = Endpoint::from_static("http://workload.api")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|e| {
            client_err(
                &format!("cannot connect to the Workload API at {}", socket.display()),
                source_text(&e),
            )
        })?;
    // As large as the agent's own Sync limit: the answer carries the CRL.
    Ok(SpiffeWorkloadApiClient::new(channel)
        .max_decoding_message_size(crate::node_client::MAX_NODE_MESSAGE))
}

fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let _ = write!(out, ": {s}");
        cur = s.source();
    }
    out
}

pub(crate) fn status_err(status: &tonic::Status) -> AgentError {
    AgentError::Client(format!(
        "Workload API: {} ({:?})",
        status.message(),
        status.code()
    ))
}

async fn open_stream(socket: &Path) -> Result<Streaming<X509svidResponse>, AgentError> {
    let mut client = connect(socket).await?;
    let mut req = Request::new(X509svidRequest {});
    req.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    Ok(client
        .fetch_x509svid(req)
        .await
        .map_err(|s| status_err(&s))?
        .into_inner())
}

/// `api fetch x509`: prints each SVID's SPIFFE ID and expiry; with `write`,
/// writes the default SVID's files.
pub async fn fetch_x509(socket: &Path, write: Option<&Path>) -> Result<String, AgentError> {
    let mut stream = open_stream(socket).await?;
    let resp = stream
        .message()
        .await
        .map_err(|s| status_err(&s))?
        .ok_or_else(|| {
            AgentError::Client("Workload API: the stream ended without an answer".into())
        })?;
    let mut out = describe(&resp)?;
    if let Some(dir) = write {
        let written = write_files(dir, &resp)?;
        for p in written {
            let _ = writeln!(out, "wrote {}", p.display());
        }
    }
    Ok(out)
}

/// `api watch`: prints every update until the stream ends (an error ends it
/// with an error) or the process is interrupted.
pub async fn watch(socket: &Path) -> Result<(), AgentError> {
    let mut stream = open_stream(socket).await?;
    let mut n = 0u64;
    loop {
        match stream.message().await {
            Ok(Some(resp)) => {
                n += 1;
                println!(
                    "update {n} at {}",
                    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                );
                print!("{}", describe(&resp)?);
            }
            Ok(None) => return Err(AgentError::Client("Workload API: the stream ended".into())),
            Err(s) => return Err(status_err(&s)),
        }
    }
}

/// Splits concatenated DER certificates.
pub fn split_der(mut bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(bytes)
            .map_err(|e| format!("bad certificate: {e}"))?;
        let len = bytes.len() - rest.len();
        out.push(CertificateDer::from(bytes[..len].to_vec()));
        bytes = rest;
    }
    Ok(out)
}

/// One line per SVID: SPIFFE ID, expiry, hint.
pub fn describe(resp: &X509svidResponse) -> Result<String, AgentError> {
    let mut out = String::new();
    for (i, svid) in resp.svids.iter().enumerate() {
        let chain = split_der(&svid.x509_svid).map_err(|e| client_err("x509_svid", e))?;
        let leaf = chain
            .first()
            .ok_or_else(|| AgentError::Client("x509_svid is empty".into()))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| client_err("x509_svid", e))?;
        let not_after = crate::schedule::from_unix(cert.validity().not_after.timestamp());
        let _ = write!(
            out,
            "SPIFFE ID: {}  expires: {}",
            svid.spiffe_id,
            humantime::format_rfc3339_seconds(not_after)
        );
        if !svid.hint.is_empty() {
            let _ = write!(out, "  hint: {}", svid.hint);
        }
        if i == 0 {
            out.push_str("  (default)");
        }
        out.push('\n');
    }
    Ok(out)
}

/// Writes the default SVID's `svid.pem` (chain), `svid.key` (PKCS#8 PEM,
/// 0600), `bundle.pem`, and `crl.pem` when a CRL is present.
pub fn write_files(dir: &Path, resp: &X509svidResponse) -> Result<Vec<PathBuf>, AgentError> {
    let svid = resp
        .svids
        .first()
        .ok_or_else(|| AgentError::Client("no SVID in the answer".into()))?;
    // 0700 whatever the umask: svid.key goes in it.
    lanyard_hardening::create_dir_exact(dir, 0o700).map_err(|e| AgentError::io(dir, e))?;
    let chain = split_der(&svid.x509_svid).map_err(|e| client_err("x509_svid", e))?;
    let bundle = split_der(&svid.bundle).map_err(|e| client_err("bundle", e))?;
    let key = SvidKey::from_pkcs8_der(&svid.x509_svid_key)?;
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: &[u8], mode: u32| -> Result<(), AgentError> {
        let p = dir.join(name);
        write_file_atomic(&p, bytes, mode)?;
        written.push(p);
        Ok(())
    };
    put("svid.pem", certificates_to_pem(&chain).as_bytes(), 0o644)?;
    put("svid.key", key.pkcs8_pem().as_bytes(), 0o600)?;
    put("bundle.pem", certificates_to_pem(&bundle).as_bytes(), 0o644)?;
    if let Some(crl) = resp.crl.first().filter(|c| !c.is_empty()) {
        put("crl.pem", pem_block("X509 CRL", crl).as_bytes(), 0o644)?;
    }
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cert() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names =
            vec![rcgen::SanType::URI("spiffe://td.org/w".try_into().unwrap())];
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn splits_concatenated_der() {
        let (a, b) = (cert(), cert());
        let both = [a.clone(), b.clone()].concat();
        let parts = split_der(&both).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].as_ref(), a.as_slice());
        assert_eq!(parts[1].as_ref(), b.as_slice());
        assert!(split_der(&[0x30, 0x01]).is_err());
    }

    #[test]
    fn writes_files_with_a_private_key_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = SvidKey::generate().unwrap();
        let resp = X509svidResponse {
            svids: vec![lanyard_proto::workload::X509svid {
                spiffe_id: "spiffe://td.org/w".into(),
                x509_svid: cert().into(),
                x509_svid_key: key.pkcs8_der().into(),
                bundle: cert().into(),
                hint: "h".into(),
            }],
            crl: vec![vec![0x30, 0x00]],
            federated_bundles: Default::default(),
        };
        let written = write_files(dir.path(), &resp).unwrap();
        assert_eq!(written.len(), 4);
        let mode = std::fs::metadata(dir.path().join("svid.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let crl = std::fs::read_to_string(dir.path().join("crl.pem")).unwrap();
        assert!(crl.starts_with("-----BEGIN X509 CRL-----\nMAA=\n"), "{crl}");
        let text = describe(&resp).unwrap();
        assert!(text.contains("SPIFFE ID: spiffe://td.org/w"), "{text}");
        assert!(
            text.contains("hint: h") && text.contains("(default)"),
            "{text}"
        );
    }
}
