//! The signals that stop a daemon.

/// Waits for SIGTERM or SIGINT: what a service manager or an operator's
/// Ctrl-C sends to stop the daemon. Where those handlers cannot be
/// installed, waits for Ctrl-C alone.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
