//! A gRPC channel to the admin socket.

use std::path::{Path, PathBuf};

use anyhow::Context;
use hyper_util::rt::TokioIo;
use lanyard_proto::admin::v1::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

/// Connects to the server's admin socket.
/// The largest Admin API answer the CLI reads: `svid list`, `audit export`
/// and `datastore export` grow with the store (tonic's default is 4 MiB).
const MAX_ADMIN_ANSWER: usize = 1024 * 1024 * 1024;

pub(crate) async fn connect(socket: &Path) -> anyhow::Result<AdminClient<Channel>> {
    let path: PathBuf = socket.to_path_buf();
    let channel = Endpoint::from_static("http://lanyard-admin.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| {
            format!(
                "cannot reach lanyard-server on admin socket {} (is the server running? set --socket)",
                socket.display()
            )
        })?;
    Ok(AdminClient::new(channel).max_decoding_message_size(MAX_ADMIN_ANSWER))
}
