//! Time arithmetic for certificate validity, in whole Unix seconds (the
//! resolution X.509 encodes). The CA never reads the clock: every time comes
//! from the caller.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use crate::error::CaError;

/// How far NotBefore is backdated, to tolerate clock skew between the
/// server and the verifiers (the profile allows at most a minute).
pub(crate) const BACKDATE_SECS: i64 = 30;

/// Seconds since the Unix epoch.
pub(crate) fn unix_secs(t: SystemTime, what: &'static str) -> Result<i64, CaError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CaError::TimeOutOfRange { what })?
        .as_secs();
    i64::try_from(secs).map_err(|_| CaError::TimeOutOfRange { what })
}

/// A duration in whole seconds, as `i64`.
pub(crate) fn duration_secs(d: Duration, what: &'static str) -> Result<i64, CaError> {
    i64::try_from(d.as_secs()).map_err(|_| CaError::TimeOutOfRange { what })
}

/// The `OffsetDateTime` rcgen wants for a Unix timestamp.
pub(crate) fn offset_date_time(secs: i64, what: &'static str) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| CaError::TimeOutOfRange { what })
}
