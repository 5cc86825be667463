//! `[limits]`: what one client may hold of the server's TCP listeners (the
//! Node API and the HTTP address). The admin socket is not counted: an
//! operator is answered at the cap.

use std::time::Duration;

use serde::Deserialize;

/// `[limits]` as written in the config file; every key optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Connections one TCP listener holds at once; past it, new ones are
    /// closed at once.
    pub max_connections: Option<usize>,
    /// A connection that receives nothing for this long is closed.
    #[serde(default, with = "humantime_serde")]
    pub connection_idle_timeout: Option<Duration>,
    /// An HTTP request's headers must arrive within this.
    #[serde(default, with = "humantime_serde")]
    pub http_header_timeout: Option<Duration>,
    /// A Node API client must complete its TLS handshake within this.
    #[serde(default, with = "humantime_serde")]
    pub tls_handshake_timeout: Option<Duration>,
}

/// The validated `[limits]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections per TCP listener.
    pub max_connections: usize,
    /// Idle (nothing received) time after which a connection is closed.
    pub connection_idle_timeout: Duration,
    /// Time allowed for an HTTP request's headers.
    pub http_header_timeout: Duration,
    /// Time allowed for a Node API TLS handshake.
    pub tls_handshake_timeout: Duration,
}

/// The defaults, as `deploy/server.toml` documents them.
impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            // Two listeners at the cap stay far below LimitNOFILE=65536.
            max_connections: 16_384,
            // Agents' connections carry HTTP/2 pings well within this.
            connection_idle_timeout: Duration::from_secs(300),
            http_header_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl LimitsFile {
    /// Applies the defaults and checks each value; an error names the key.
    pub fn validate(self) -> Result<ListenerLimits, String> {
        let defaults = ListenerLimits::default();
        let limits = ListenerLimits {
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            connection_idle_timeout: self
                .connection_idle_timeout
                .unwrap_or(defaults.connection_idle_timeout),
            http_header_timeout: self
                .http_header_timeout
                .unwrap_or(defaults.http_header_timeout),
            tls_handshake_timeout: self
                .tls_handshake_timeout
                .unwrap_or(defaults.tls_handshake_timeout),
        };
        if limits.max_connections == 0 {
            return Err("limits.max_connections must be at least 1".into());
        }
        for (key, value) in [
            ("connection_idle_timeout", limits.connection_idle_timeout),
            ("http_header_timeout", limits.http_header_timeout),
            ("tls_handshake_timeout", limits.tls_handshake_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(format!("limits.{key} must be at least 100ms"));
            }
        }
        Ok(limits)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values_named() {
        assert_eq!(
            LimitsFile::default().validate().unwrap(),
            ListenerLimits::default()
        );
        let zero = LimitsFile {
            max_connections: Some(0),
            ..LimitsFile::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .contains("limits.max_connections")
        );
        let short = LimitsFile {
            http_header_timeout: Some(Duration::from_millis(1)),
            ..LimitsFile::default()
        };
        assert!(
            short
                .validate()
                .unwrap_err()
                .contains("limits.http_header_timeout")
        );
    }
}
