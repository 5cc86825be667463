//! The logging set-up `lanyard-server` and `lanyard-agent` share: a
//! `tracing` filter, one line per event on stderr as text or JSON, and ANSI
//! colour only when stderr is a terminal. A log file, a pipe or journald
//! gets plain text, so the server and the agent never write escape
//! characters into a log. `NO_COLOR` (any non-empty value) turns colour off
//! on a terminal too.
//!
//! ```no_run
//! use lanyard_logging::{LogFormat, init};
//!
//! # fn main() -> Result<(), lanyard_logging::LoggingError> {
//! init("info,lanyard_agent=debug", LogFormat::Text)?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::IsTerminal;

use serde::Deserialize;

/// Log output format (`log_format` / `--log-format`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = LoggingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(LoggingError::Format {
                given: other.to_owned(),
            }),
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// The filter does not parse; carries the filter and the parser's reason.
    #[error(
        "log_level {filter:?}: {reason}; expected a tracing filter such as `info` or `info,lanyard_agent=debug`"
    )]
    Filter {
        /// The filter as given.
        filter: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The format is neither `text` nor `json`.
    #[error("log_format must be `text` or `json`, got `{given}`")]
    Format {
        /// The format as given.
        given: String,
    },
    /// A global subscriber is already installed (`init` called twice).
    #[error("logging is already set up: {0}")]
    AlreadySet(String),
}

/// Checks a filter without installing anything (for config validation).
///
/// # Errors
///
/// [`LoggingError::Filter`] naming the filter and why it does not parse.
pub fn check_filter(filter: &str) -> Result<(), LoggingError> {
    parse_filter(filter).map(drop)
}

fn parse_filter(filter: &str) -> Result<tracing_subscriber::EnvFilter, LoggingError> {
    tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| LoggingError::Filter {
        filter: filter.to_owned(),
        reason: e.to_string(),
    })
}

/// Whether to colour the output: only for a person at a terminal, and not
/// when `NO_COLOR` is set to something.
pub fn use_ansi(stderr_is_terminal: bool, no_color: Option<&str>) -> bool {
    stderr_is_terminal && no_color.is_none_or(str::is_empty)
}

/// Installs the global subscriber: `filter` (a tracing filter such as
/// `info`), `format`, written to stderr, coloured only on a terminal.
///
/// # Errors
///
/// [`LoggingError::Filter`] for a bad filter, [`LoggingError::AlreadySet`]
/// if a subscriber is already installed.
pub fn init(filter: &str, format: LogFormat) -> Result<(), LoggingError> {
    let filter = parse_filter(filter)?;
    let no_color = std::env::var("NO_COLOR").ok();
    let ansi = use_ansi(std::io::stderr().is_terminal(), no_color.as_deref());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| LoggingError::AlreadySet(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_ansi(true, None));
        assert!(use_ansi(true, Some("")));
        assert!(!use_ansi(true, Some("1")));
        assert!(!use_ansi(false, None));
        assert!(!use_ansi(false, Some("")));
    }

    #[test]
    fn formats_parse_and_a_bad_one_is_named() {
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        let e = "xml".parse::<LogFormat>().unwrap_err().to_string();
        assert!(e.contains("xml") && e.contains("json"), "{e}");
    }

    #[test]
    fn a_bad_filter_is_named() {
        check_filter("info,lanyard_agent=debug").unwrap();
        let e = check_filter("info,=[").unwrap_err().to_string();
        assert!(e.contains("log_level") && e.contains("info,=["), "{e}");
    }
}
