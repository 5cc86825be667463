//! The SPIFFE Workload API over the agent's Unix socket. Each call is
//! attested from the caller's pinned process; X.509 calls are streams that
//! send the caller's full state at once and again on every change.

use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use futures::Stream;
use lanyard_identity::Selector;
use lanyard_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse, spiffe_workload_api_server::SpiffeWorkloadApi,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    attestor::{AttestError, HashCache, PeerProcess},
    cache::Snapshot,
    jwt_svids::JwtSvids,
    metrics::Metrics,
    schedule::{from_unix, to_unix, until},
    workload_jwt::{fetch_jwt_svids, jwt_bundles_response, validate},
    workload_response::{next_expiry, serving, x509_bundles_response, x509_svid_response},
};

/// The JWT-SVID cache, set once the agent has its identity and a channel
/// to the server; JWT calls answer Unavailable until then.
pub type JwtHandle = Arc<OnceLock<Arc<JwtSvids>>>;

/// The metadata every Workload API request must carry.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// Longest wait between re-evaluations of an idle stream.
const MAX_IDLE: Duration = Duration::from_secs(300);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Workload API service.
#[derive(Clone, Debug)]
pub struct WorkloadApi {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    /// Binary digests already computed (unix:sha256), by file state.
    hashes: Arc<HashCache>,
    jwt: JwtHandle,
}

impl WorkloadApi {
    /// Serves from `snapshots` and mints JWT-SVIDs through `jwt`; open
    /// streams end when `shutdown` fires.
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
        jwt: JwtHandle,
    ) -> Self {
        Self {
            snapshots,
            shutdown,
            metrics,
            hashes: Arc::new(HashCache::default()),
            jwt,
        }
    }

    /// The JWT-SVID cache, or Unavailable before the agent has attested.
    fn tokens(&self) -> Result<Arc<JwtSvids>, Status> {
        self.jwt.get().cloned().ok_or_else(|| {
            Status::unavailable("agent is not ready yet: it has not attested to the server")
        })
    }

    /// Counts the call by its answer's code.
    fn counted<T>(&self, method: &'static str, result: Result<T, Status>) -> Result<T, Status> {
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.metrics.call(method, code);
        result
    }

    /// Checks the header and readiness, then attests the caller.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Vec<Selector>, Status> {
        check_header(req.metadata())?;
        // Fail fast before the (costly) attestation when nothing can be served.
        serving(&self.snapshots.borrow())?;
        let peer = req
            .extensions()
            .get::<Arc<PeerProcess>>()
            .cloned()
            .ok_or_else(|| {
                Status::internal(
                    "caller's process is unknown (not a Workload API socket connection)",
                )
            })?;
        let pid = peer.pid;
        let started = Instant::now();
        let attested = peer.attest_within(&self.hashes).await;
        self.metrics.attestation(started.elapsed());
        let selectors = attested.map_err(|e| {
            tracing::warn!(pid, error = %e, "workload attestation failed");
            let message = format!("workload attestation failed: {e}");
            match e {
                AttestError::TimedOut { .. } => Status::deadline_exceeded(message),
                _ => Status::permission_denied(message),
            }
        })?;
        tracing::debug!(pid, selectors = selectors.len(), "workload attested");
        Ok(selectors)
    }

    /// Streams `build(snapshot)` to the caller: at once, then whenever it
    /// changes (new snapshot, or an SVID reaching NotAfter). `Ok(None)`
    /// sends nothing and keeps the stream open (an SVID being re-issued
    /// after a revocation). An error (no identity any more, agent stopped)
    /// is sent and ends the stream.
    fn stream<T, F>(&self, selectors: Vec<Selector>, first: Option<T>, build: F) -> BoxStream<T>
    where
        T: PartialEq + Clone + Send + 'static,
        F: Fn(&Snapshot, &[Selector], i64) -> Result<Option<T>, Status> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(2);
        let mut snapshots = self.snapshots.clone();
        let shutdown = self.shutdown.clone();
        let open = self.metrics.stream_opened();
        tokio::spawn(async move {
            // Counted as open for as long as this task runs.
            let _open = open;
            let mut last = first.clone();
            if let Some(first) = first
                && tx.send(Ok(first)).await.is_err()
            {
                return;
            }
            loop {
                let now = to_unix(std::time::SystemTime::now());
                let wake = next_expiry(&snapshots.borrow(), &selectors, now)
                    .map(|t| until(from_unix(t)))
                    .unwrap_or(MAX_IDLE)
                    .min(MAX_IDLE);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    changed = snapshots.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(wake) => {}
                }
                let now = to_unix(std::time::SystemTime::now());
                let next = build(&snapshots.borrow_and_update(), &selectors, now);
                match next {
                    Ok(None) => {}
                    Ok(Some(msg)) if last.as_ref() == Some(&msg) => {}
                    Ok(Some(msg)) => {
                        last = Some(msg.clone());
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                    }
                    Err(status) => {
                        tracing::debug!(code = ?status.code(), message = status.message(), "ending Workload API stream");
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

/// InvalidArgument unless the `workload.spiffe.io: true` metadata is present.
pub fn check_header(metadata: &MetadataMap) -> Result<(), Status> {
    match metadata.get(SECURITY_HEADER).map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request: workload.spiffe.io: true",
        )),
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = BoxStream<X509svidResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let result = self.caller(&req).await.and_then(|selectors| {
            let now = to_unix(std::time::SystemTime::now());
            let first = x509_svid_response(&self.snapshots.borrow(), &selectors, now)?;
            Ok((selectors, first))
        });
        let (selectors, first) = self.counted("fetch_x509_svid", result)?;
        Ok(Response::new(self.stream(
            selectors,
            first,
            x509_svid_response,
        )))
    }

    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let result = self.caller(&req).await.and_then(|selectors| {
            let now = to_unix(std::time::SystemTime::now());
            let first = x509_bundles_response(&self.snapshots.borrow(), &selectors, now)?;
            Ok((selectors, first))
        });
        let (selectors, first) = self.counted("fetch_x509_bundles", result)?;
        Ok(Response::new(self.stream(
            selectors,
            Some(first),
            |snapshot: &Snapshot, selectors: &[Selector], now| {
                x509_bundles_response(snapshot, selectors, now).map(Some)
            },
        )))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let result = async {
            check_header(req.metadata())?;
            let audience = &req.get_ref().audience;
            if audience.is_empty() || audience.iter().any(String::is_empty) {
                return Err(Status::invalid_argument(
                    "audience is required: at least one, none empty",
                ));
            }
            let selectors = self.caller(&req).await?;
            let tokens = self.tokens()?;
            let snapshot = self.snapshots.borrow().clone();
            let now = to_unix(std::time::SystemTime::now());
            let r = req.get_ref();
            fetch_jwt_svids(
                &snapshot,
                &selectors,
                &r.audience,
                &r.spiffe_id,
                &tokens,
                now,
            )
            .await
        }
        .await;
        self.counted("fetch_jwt_svid", result).map(Response::new)
    }

    type FetchJWTBundlesStream = BoxStream<JwtBundlesResponse>;

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let result = self.caller(&req).await.and_then(|selectors| {
            let now = to_unix(std::time::SystemTime::now());
            let first = jwt_bundles_response(&self.snapshots.borrow(), &selectors, now)?;
            Ok((selectors, first))
        });
        let (selectors, first) = self.counted("fetch_jwt_bundles", result)?;
        Ok(Response::new(self.stream(
            selectors,
            Some(first),
            |snapshot: &Snapshot, selectors: &[Selector], now| {
                jwt_bundles_response(snapshot, selectors, now).map(Some)
            },
        )))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let result = check_header(req.metadata()).and_then(|()| {
            let tokens = self.tokens()?;
            let snapshot = self.snapshots.borrow().clone();
            let now = to_unix(std::time::SystemTime::now());
            let r = req.get_ref();
            validate(&snapshot, &r.audience, &r.svid, &tokens, now)
        });
        self.counted("validate_jwt_svid", result).map(Response::new)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn header_must_be_exactly_true() {
        let mut m = MetadataMap::new();
        assert_eq!(
            check_header(&m).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        m.insert(SECURITY_HEADER, "false".parse().unwrap());
        assert_eq!(
            check_header(&m).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        m.insert(SECURITY_HEADER, "true".parse().unwrap());
        check_header(&m).unwrap();
    }
}
