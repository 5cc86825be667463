//! The server's Admin API over its admin Unix socket, for registering many
//! entries at once (10,000 runs of the CLI would measure process start-up,
//! not the agent).

use std::path::Path;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use hyper_util::rt::TokioIo;
use lanyard_proto::admin::v1::{
    BatchCreateEntriesRequest, CreateEntryRequest, Entry, ListSvidsRequest,
    admin_client::AdminClient, batch_create_entry_result,
};
use tonic::transport::{Channel, Endpoint};

/// Large enough for a list of every SVID issued in a run.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// An Admin API client on `socket`.
pub async fn connect(socket: &Path) -> anyhow::Result<AdminClient<Channel>> {
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://lanyard-admin.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("connecting to the admin socket {}", socket.display()))?;
    Ok(AdminClient::new(channel).max_decoding_message_size(MAX_MESSAGE))
}

/// Registers `count` entries `spiffe://<td>/<prefix>-<first + i>` for
/// `selector` under `parent`, `parallelism` requests at a time.
pub async fn create_entries(
    client: &AdminClient<Channel>,
    trust_domain: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
    parent: &str,
    selector: &str,
    parallelism: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(range)
        .map(|i| {
            let mut client = client.clone();
            let entry = Entry {
                spiffe_id: format!("spiffe://{trust_domain}/{prefix}-{i}"),
                parent_id: parent.to_owned(),
                selectors: vec![selector.to_owned()],
                ..Entry::default()
            };
            async move {
                client
                    .create_entry(CreateEntryRequest { entry: Some(entry) })
                    .await
                    .with_context(|| format!("creating entry {prefix}-{i}"))
            }
        })
        .buffer_unordered(parallelism.max(1))
        .try_for_each(|_| async { Ok(()) })
        .await
}

/// Registers one entry for `selector` under `parent`.
pub async fn create_entry(
    client: &AdminClient<Channel>,
    spiffe_id: &str,
    parent: &str,
    selector: &str,
) -> anyhow::Result<()> {
    let entry = Entry {
        spiffe_id: spiffe_id.to_owned(),
        parent_id: parent.to_owned(),
        selectors: vec![selector.to_owned()],
        ..Entry::default()
    };
    client
        .clone()
        .create_entry(CreateEntryRequest { entry: Some(entry) })
        .await
        .with_context(|| format!("creating entry {spiffe_id}"))?;
    Ok(())
}

/// Registers `count` entries like [`create_entries`], `chunk` at a time
/// through BatchCreateEntries (one store transaction per call).
pub async fn batch_create_entries(
    client: &AdminClient<Channel>,
    trust_domain: &str,
    prefix: &str,
    range: std::ops::Range<usize>,
    parent: &str,
    selector: &str,
) -> anyhow::Result<()> {
    const CHUNK: usize = 5_000;
    let ids: Vec<usize> = range.collect();
    for part in ids.chunks(CHUNK) {
        let entries = part
            .iter()
            .map(|i| Entry {
                spiffe_id: format!("spiffe://{trust_domain}/{prefix}-{i}"),
                parent_id: parent.to_owned(),
                selectors: vec![selector.to_owned()],
                ..Entry::default()
            })
            .collect();
        let results = client
            .clone()
            .batch_create_entries(BatchCreateEntriesRequest { entries })
            .await
            .with_context(|| format!("creating entries {prefix}-*"))?
            .into_inner()
            .results;
        if let Some(failed) = results
            .iter()
            .find(|r| !matches!(r.result, Some(batch_create_entry_result::Result::Entry(_))))
        {
            anyhow::bail!("an entry was refused: {failed:?}");
        }
    }
    Ok(())
}

/// How many SVIDs the server has issued whose SPIFFE ID path starts with
/// `prefix` (durably recorded before they are returned to the agent).
pub async fn count_issued(
    client: &AdminClient<Channel>,
    trust_domain: &str,
    prefix: &str,
) -> anyhow::Result<usize> {
    let start = format!("spiffe://{trust_domain}/{prefix}");
    let svids = client
        .clone()
        .list_svids(ListSvidsRequest::default())
        .await
        .context("listing issued SVIDs")?
        .into_inner()
        .svids;
    Ok(svids
        .iter()
        .filter(|s| s.spiffe_id.starts_with(&start) && !s.revoked)
        .count())
}
