//! A raw SPIFFE Workload API client (the generated one) on the agent's Unix
//! socket: one connection per client, requests carrying the security header.

use std::path::Path;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use lanyard_proto::workload::{
    X509svidRequest, X509svidResponse, spiffe_workload_api_client::SpiffeWorkloadApiClient,
};
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

/// The generated Workload API client over one Unix socket connection.
pub type Client = SpiffeWorkloadApiClient<Channel>;

/// Large enough for one response carrying 10,000 SVIDs with their keys and
/// bundles.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Opens one connection to the Workload API at `socket`.
pub async fn connect(socket: &Path) -> anyhow::Result<Client> {
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://lanyard-agent.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("connecting to the Workload API at {}", socket.display()))?;
    Ok(SpiffeWorkloadApiClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
}

/// `msg` with the `workload.spiffe.io: true` metadata the agent requires.
pub fn request<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("workload.spiffe.io", MetadataValue::from_static("true"));
    req
}

/// The first message of a `FetchX509SVID` stream.
pub async fn fetch_x509_once(client: &mut Client) -> anyhow::Result<X509svidResponse> {
    let mut stream = client
        .fetch_x509svid(request(X509svidRequest {}))
        .await
        .context("FetchX509SVID")?
        .into_inner();
    stream
        .message()
        .await
        .context("FetchX509SVID stream")?
        .context("FetchX509SVID stream ended without a message")
}
