//! The SPIFFE Workload API over the agent's Unix socket. Each call is
//! attested from the caller's pinned process; X.509 calls are streams that
//! send the caller's full state at once and again on every change.

use std::{pin::Pin, sync::Arc, time::Duration};

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
    attestor::PeerProcess,
    cache::Snapshot,
    schedule::{from_unix, to_unix, until},
    workload_response::{next_expiry, serving, x509_bundles_response, x509_svid_response},
};

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
}

impl WorkloadApi {
    /// Serves from `snapshots`; open streams end when `shutdown` fires.
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>, shutdown: CancellationToken) -> Self {
        Self {
            snapshots,
            shutdown,
        }
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
        let selectors = tokio::task::spawn_blocking(move || peer.attest())
            .await
            .map_err(|e| Status::internal(format!("workload attestation task failed: {e}")))?
            .map_err(|e| {
                tracing::warn!(pid, error = %e, "workload attestation failed");
                Status::permission_denied(format!("workload attestation failed: {e}"))
            })?;
        tracing::debug!(pid, selectors = selectors.len(), "workload attested");
        Ok(selectors)
    }

    /// Streams `build(snapshot)` to the caller: at once, then whenever it
    /// changes (new snapshot, or an SVID reaching NotAfter). An error
    /// (no identity any more, agent stopped) is sent and ends the stream.
    fn stream<T, F>(&self, selectors: Vec<Selector>, first: T, build: F) -> BoxStream<T>
    where
        T: PartialEq + Clone + Send + 'static,
        F: Fn(&Snapshot, &[Selector], i64) -> Result<T, Status> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(2);
        let mut snapshots = self.snapshots.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut last = first.clone();
            if tx.send(Ok(first)).await.is_err() {
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
                    Ok(msg) if msg == last => {}
                    Ok(msg) => {
                        last = msg.clone();
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
        let selectors = self.caller(&req).await?;
        let now = to_unix(std::time::SystemTime::now());
        let first = x509_svid_response(&self.snapshots.borrow(), &selectors, now)?;
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
        let selectors = self.caller(&req).await?;
        let now = to_unix(std::time::SystemTime::now());
        let first = x509_bundles_response(&self.snapshots.borrow(), &selectors, now)?;
        Ok(Response::new(self.stream(
            selectors,
            first,
            x509_bundles_response,
        )))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_header(req.metadata())?;
        Err(Status::unimplemented("JWT-SVIDs are not supported yet"))
    }

    type FetchJWTBundlesStream = BoxStream<JwtBundlesResponse>;

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        check_header(req.metadata())?;
        Err(Status::unimplemented("JWT bundles are not supported yet"))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(req.metadata())?;
        Err(Status::unimplemented(
            "JWT-SVID validation is not supported yet",
        ))
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
