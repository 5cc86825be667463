//! The time helpers every Lanyard crate shares: Unix seconds (the form the
//! store, the certificates' summaries and the APIs carry) and exponential
//! backoff with jitter for retries.
//!
//! Nothing here reads the clock except [`now_unix`]; domain code takes the
//! time as an argument (or an injected clock) and converts it here.
//!
//! ```
//! use std::time::Duration;
//! use lanyard_time::{Backoff, from_unix, unix};
//!
//! assert_eq!(unix(from_unix(1_700_000_000)), 1_700_000_000);
//! let retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
//! // The third retry waits between half and all of 100 ms * 2^3.
//! let d = retry.delay(3, 0.5);
//! assert_eq!(d, Duration::from_millis(600));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
mod unix;

pub use self::{
    backoff::{Backoff, random_unit},
    unix::{from_unix, now_unix, unix, until},
};
