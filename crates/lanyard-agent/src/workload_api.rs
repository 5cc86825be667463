//! The SPIFFE Workload API over the agent's Unix socket. Each call is
//! attested from the caller's pinned process; X.509 calls are streams that
//! send the caller's full state at once and again on every change.

use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    time::Instant,
};

use futures::Stream;
use lanyard_identity::Selector;
use lanyard_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse, spiffe_workload_api_server::SpiffeWorkloadApi,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    attestor::{AttestError, HashCache, PeerProcess},
    cache::Snapshot,
    jwt_svids::JwtSvids,
    metrics::Metrics,
    schedule::to_unix,
    workload_jwt::{fetch_jwt_svids, jwt_bundles_response, validate},
    workload_response::{serving, x509_bundles_response, x509_svid_response},
    workload_views::{Built, View, Views},
};

/// The JWT-SVID cache, set once the agent has its identity and a channel
/// to the server; JWT calls answer Unavailable until then.
pub type JwtHandle = Arc<OnceLock<Arc<JwtSvids>>>;

/// The metadata every Workload API request must carry.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The Workload API service.
#[derive(Clone, Debug)]
pub struct WorkloadApi {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    /// Binary digests already computed (unix:sha256), by file state.
    hashes: Arc<HashCache>,
    /// Answers shared by the calls and streams of one selector set.
    views: Arc<SharedViews>,
    jwt: JwtHandle,
}

/// The shared answers of each streaming call.
#[derive(Debug, Default)]
struct SharedViews {
    x509_svids: Views<X509svidResponse>,
    x509_bundles: Views<X509BundlesResponse>,
    jwt_bundles: Views<JwtBundlesResponse>,
}

impl WorkloadApi {
    /// Serves from `snapshots` and mints JWT-SVIDs through `jwt`. Open
    /// streams follow `snapshots`: they end when it publishes a stopped
    /// snapshot (the agent stopping) or closes, and they are re-evaluated
    /// at their SVIDs' NotAfter because the agent's Workload API clock
    /// task publishes the snapshot again then.
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        metrics: Arc<Metrics>,
        jwt: JwtHandle,
    ) -> Self {
        Self {
            snapshots,
            metrics,
            hashes: Arc::new(HashCache::default()),
            views: Arc::default(),
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
    async fn caller<T>(&self, req: &Request<T>) -> Result<Arc<[Selector]>, Status> {
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
        self.metrics
            .attestation(started.elapsed(), attested.as_ref().is_ok_and(|a| a.reused));
        let selectors = attested.map(|a| a.selectors).map_err(|e| {
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

    /// The first answer of a streaming call for `selectors`, from the
    /// views of `pick`, and the snapshot channel marked as having seen the
    /// snapshot it came from: the stream wakes for the next one only.
    async fn first<T: PartialEq>(
        &self,
        selectors: &Arc<[Selector]>,
        pick: fn(&SharedViews) -> &Views<T>,
        build: fn(&Snapshot, &[Selector], i64) -> Built<T>,
    ) -> First<T> {
        let mut snapshots = self.snapshots.clone();
        let snapshot = snapshots.borrow_and_update().clone();
        let now = to_unix(std::time::SystemTime::now());
        let view = pick(&self.views)
            .get(&snapshot, selectors, now, build)
            .await;
        First { view, snapshots }
    }

    /// Streams the shared answer of `selectors` to the caller: `first` at
    /// once, then whenever it changes (new snapshot, or an SVID reaching
    /// NotAfter, which republishes the snapshot). `Ok(None)` sends nothing
    /// and keeps the stream open (an SVID being re-issued after a
    /// revocation). An error (no identity any more, agent stopped) is sent
    /// and ends the stream. Each change costs the stream a pointer
    /// comparison, unless its answer changed.
    ///
    /// The stream is polled by the call's own HTTP/2 stream task: no task,
    /// channel or timer of its own, so the first answer goes out without
    /// waking anything else, and a caller that goes away simply drops it.
    fn stream<T>(
        &self,
        selectors: Arc<[Selector]>,
        first: First<T>,
        pick: fn(&SharedViews) -> &Views<T>,
        build: fn(&Snapshot, &[Selector], i64) -> Built<T>,
    ) -> BoxStream<T>
    where
        T: PartialEq + Clone + Send + Sync + 'static,
    {
        let First { view, snapshots } = first;
        let pending = match &view.answer {
            Ok(Some(message)) => Some(T::clone(message)),
            _ => None,
        };
        let watch = Watch {
            snapshots,
            views: Arc::clone(&self.views),
            selectors,
            pick,
            build,
            last: view,
            pending,
            ended: false,
            _open: self.metrics.stream_opened(),
        };
        Box::pin(futures::stream::unfold(watch, |mut watch| async move {
            let item = watch.next().await?;
            Some((item, watch))
        }))
    }
}

/// A streaming call's first answer and its snapshot channel.
struct First<T> {
    view: View<T>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

/// An open streaming call's state between its messages.
struct Watch<T> {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    views: Arc<SharedViews>,
    selectors: Arc<[Selector]>,
    pick: fn(&SharedViews) -> &Views<T>,
    build: fn(&Snapshot, &[Selector], i64) -> Built<T>,
    /// The answer last sent (or, before any, the first one).
    last: View<T>,
    /// The first message, not sent yet.
    pending: Option<T>,
    /// An error was sent: nothing follows it.
    ended: bool,
    /// Counts the stream as open until it is dropped.
    _open: crate::metrics::OpenStream,
}

impl<T: PartialEq + Clone> Watch<T> {
    /// The next message: at once the first, then when the answer changes;
    /// `None` ends the stream (agent stopping, or after an error).
    async fn next(&mut self) -> Option<Result<T, Status>> {
        if self.ended {
            return None;
        }
        if let Some(first) = self.pending.take() {
            return Some(Ok(first));
        }
        loop {
            // The agent stopping publishes a stopped snapshot first, whose
            // answer is the error that ends the stream.
            if self.snapshots.changed().await.is_err() {
                return None;
            }
            let snapshot = self.snapshots.borrow_and_update().clone();
            let now = to_unix(std::time::SystemTime::now());
            let next = (self.pick)(&self.views)
                .get(&snapshot, &self.selectors, now, self.build)
                .await;
            if next.same_answer(&self.last) {
                self.last = next;
                continue;
            }
            let item = match &next.answer {
                Ok(None) => None,
                Ok(Some(message)) => Some(Ok(T::clone(message))),
                Err(status) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "ending Workload API stream");
                    self.ended = true;
                    Some(Err(status.clone()))
                }
            };
            self.last = next;
            if item.is_some() {
                return item;
            }
        }
    }
}

fn x509_svids(views: &SharedViews) -> &Views<X509svidResponse> {
    &views.x509_svids
}

fn x509_bundles(views: &SharedViews) -> &Views<X509BundlesResponse> {
    &views.x509_bundles
}

fn jwt_bundles(views: &SharedViews) -> &Views<JwtBundlesResponse> {
    &views.jwt_bundles
}

fn build_x509_bundles(
    s: &Snapshot,
    selectors: &[Selector],
    now: i64,
) -> Built<X509BundlesResponse> {
    x509_bundles_response(s, selectors, now).map(Some)
}

fn build_jwt_bundles(s: &Snapshot, selectors: &[Selector], now: i64) -> Built<JwtBundlesResponse> {
    jwt_bundles_response(s, selectors, now).map(Some)
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
        let result = match self.caller(&req).await {
            Ok(selectors) => {
                let first = self.first(&selectors, x509_svids, x509_svid_response).await;
                first.view.answer.clone().map(|_| (selectors, first))
            }
            Err(status) => Err(status),
        };
        let (selectors, first) = self.counted("fetch_x509_svid", result)?;
        Ok(Response::new(self.stream(
            selectors,
            first,
            x509_svids,
            x509_svid_response,
        )))
    }

    type FetchX509BundlesStream = BoxStream<X509BundlesResponse>;

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let result = match self.caller(&req).await {
            Ok(selectors) => {
                let first = self
                    .first(&selectors, x509_bundles, build_x509_bundles)
                    .await;
                first.view.answer.clone().map(|_| (selectors, first))
            }
            Err(status) => Err(status),
        };
        let (selectors, first) = self.counted("fetch_x509_bundles", result)?;
        Ok(Response::new(self.stream(
            selectors,
            first,
            x509_bundles,
            build_x509_bundles,
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
        let result = match self.caller(&req).await {
            Ok(selectors) => {
                let first = self.first(&selectors, jwt_bundles, build_jwt_bundles).await;
                first.view.answer.clone().map(|_| (selectors, first))
            }
            Err(status) => Err(status),
        };
        let (selectors, first) = self.counted("fetch_jwt_bundles", result)?;
        Ok(Response::new(self.stream(
            selectors,
            first,
            jwt_bundles,
            build_jwt_bundles,
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
    use std::time::{Duration, SystemTime};

    use futures::StreamExt as _;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{
        cache::{Readiness, tests::svid},
        workload_clock,
        workload_response::NO_IDENTITY,
    };

    /// A ready snapshot serving `svids`.
    fn ready(svids: Vec<Arc<crate::cache::CachedSvid>>) -> Snapshot {
        let mut snapshot = Snapshot::starting();
        snapshot.readiness = Readiness::Ready;
        snapshot.trust_domain = Some("td.org".parse().unwrap());
        snapshot.svids = svids;
        snapshot
    }

    /// A FetchX509SVID stream for a caller with the one selector `selector`.
    async fn open(api: &WorkloadApi, selector: &str) -> BoxStream<X509svidResponse> {
        let selectors: Arc<[Selector]> = Arc::from([selector.parse::<Selector>().unwrap()]);
        let first = api.first(&selectors, x509_svids, x509_svid_response).await;
        api.stream(selectors, first, x509_svids, x509_svid_response)
    }

    /// The error `stream` ends with, within `within`.
    async fn ended_with(stream: &mut BoxStream<X509svidResponse>, within: Duration) -> Status {
        tokio::time::timeout(within, stream.next())
            .await
            .expect("the stream was told in time")
            .expect("an error, not the end of the stream")
            .expect_err("an error, not an answer")
    }

    /// An open stream whose only SVID reaches NotAfter is told at that
    /// moment, through the clock's re-publication (it has no timer of its
    /// own), and a stream of another selector set sends nothing.
    #[tokio::test]
    async fn an_open_stream_is_told_when_its_svid_reaches_not_after() {
        let not_after = to_unix(SystemTime::now()) + 2;
        let (tx, rx) = watch::channel(Arc::new(ready(vec![
            svid("short", 1, &["unix:uid:1"], not_after),
            svid("long", 2, &["unix:uid:2"], not_after + 3600),
        ])));
        let tx = Arc::new(tx);
        let stop = CancellationToken::new();
        let clock = tokio::spawn(workload_clock::run(Arc::clone(&tx), stop.clone()));
        let api = WorkloadApi::new(rx, Metrics::new(), JwtHandle::default());
        let mut short = open(&api, "unix:uid:1").await;
        let mut long = open(&api, "unix:uid:2").await;
        for stream in [&mut short, &mut long] {
            let first = stream.next().await.unwrap().unwrap();
            assert_eq!(first.svids.len(), 1);
        }

        let ended = ended_with(&mut short, Duration::from_secs(10)).await;
        assert_eq!(ended.code(), tonic::Code::PermissionDenied);
        assert_eq!(ended.message(), NO_IDENTITY);
        assert!(to_unix(SystemTime::now()) >= not_after);
        assert!(short.next().await.is_none(), "the error ends the stream");
        assert!(
            tokio::time::timeout(Duration::from_millis(500), long.next())
                .await
                .is_err(),
            "an unchanged answer is not sent again"
        );
        stop.cancel();
        clock.await.unwrap();
    }

    /// A stopped snapshot (what the agent publishes as it stops) ends every
    /// open stream with its reason.
    #[tokio::test]
    async fn a_stopped_snapshot_ends_open_streams() {
        let (tx, rx) = watch::channel(Arc::new(ready(vec![svid(
            "a",
            1,
            &["unix:uid:1"],
            i64::MAX,
        )])));
        let api = WorkloadApi::new(rx, Metrics::new(), JwtHandle::default());
        let mut stream = open(&api, "unix:uid:1").await;
        stream.next().await.unwrap().unwrap();
        tx.send_replace(Arc::new(Snapshot::stopped("agent is shutting down")));
        let ended = ended_with(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(ended.code(), tonic::Code::Unavailable);
        assert!(ended.message().contains("shutting down"), "{ended:?}");
        assert!(stream.next().await.is_none());
    }

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
