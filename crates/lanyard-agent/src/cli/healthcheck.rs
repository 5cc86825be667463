//! `healthcheck`: GET /health/ready on the agent's HTTP address.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::AgentError;

/// Ok when the agent answers 200 on `/health/ready` within five seconds.
pub async fn check(addr: &str) -> Result<(), AgentError> {
    let fail = |why: String| AgentError::Client(format!("agent at {addr} is not ready: {why}"));
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let req =
            format!("GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut buf = Vec::new();
        stream
            .read_to_end(&mut buf)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok::<_, AgentError>(String::from_utf8_lossy(&buf).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| fail("no answer within 5s".into()))??;
    let status_line = answer.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) == Some("200") {
        return Ok(());
    }
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default().trim();
    Err(fail(format!("{status_line} {body}")))
}
