//! The task binding: a non-critical X.509 extension that ties a task SVID to
//! its task, ticket and audiences.
//!
//! ```text
//! id-lanyard-task-binding OBJECT IDENTIFIER ::= { 2 25 5475759489419573204 1 }
//!
//! LanyardTaskBinding ::= SEQUENCE {
//!     taskId     UTF8String,               -- e.g. "task-3f9c0a1b2c3d4e5f"
//!     ticket     UTF8String,               -- e.g. "CHG-1234"
//!     audiences  SEQUENCE OF UTF8String    -- SPIFFE IDs; empty = any audience
//! }
//! ```
//!
//! The arc under `2.25` (ITU-T X.667, UUID-based OIDs) is a UUID value whose
//! upper 64 bits are zero, because the certificate encoder limits OID arcs to
//! 64 bits; the lower 64 bits were drawn at random for Lanyard. Being
//! non-critical, the extension is ignored by tools that do not know it, so
//! plain X.509 verifiers still accept the certificate.

use der::{Decode, Encode, asn1::Utf8StringRef};

use crate::{SpiffeId, error::TaskBindingError};

/// The extension's OID arcs.
pub const TASK_BINDING_OID: &[u64] = &[2, 25, 5_475_759_489_419_573_204, 1];

/// The extension's OID in dotted form.
pub const TASK_BINDING_OID_STR: &str = "2.25.5475759489419573204.1";

/// What a task SVID is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskBinding {
    /// The task ID.
    pub task_id: String,
    /// The change ticket.
    pub ticket: String,
    /// SPIFFE IDs of the servers the SVID may be presented to; empty means any.
    pub audiences: Vec<SpiffeId>,
}

/// The wire form, encoded and decoded by the `der` crate: strict DER, so a
/// non-minimal length, a wrong tag or trailing bytes are refused.
#[derive(der::Sequence)]
struct Wire<'a> {
    task_id: Utf8StringRef<'a>,
    ticket: Utf8StringRef<'a>,
    audiences: Vec<Utf8StringRef<'a>>,
}

fn utf8(s: &str) -> Result<Utf8StringRef<'_>, TaskBindingError> {
    Utf8StringRef::new(s).map_err(malformed)
}

fn malformed(e: der::Error) -> TaskBindingError {
    TaskBindingError::Malformed(e.to_string())
}

impl TaskBinding {
    /// Whether a server with this SPIFFE ID may accept the SVID.
    pub fn admits(&self, server: &SpiffeId) -> bool {
        self.audiences.is_empty() || self.audiences.contains(server)
    }

    /// The DER extension value (`LanyardTaskBinding`).
    pub fn to_der(&self) -> Result<Vec<u8>, TaskBindingError> {
        Wire {
            task_id: utf8(&self.task_id)?,
            ticket: utf8(&self.ticket)?,
            audiences: self
                .audiences
                .iter()
                .map(|a| utf8(a.as_str()))
                .collect::<Result<_, _>>()?,
        }
        .to_der()
        .map_err(malformed)
    }

    /// Parses the DER extension value.
    pub fn from_der(der: &[u8]) -> Result<Self, TaskBindingError> {
        let wire = Wire::from_der(der).map_err(malformed)?;
        let audiences = wire
            .audiences
            .iter()
            .map(|a| {
                a.as_str().parse().map_err(|e| TaskBindingError::Audience {
                    audience: a.as_str().to_owned(),
                    source: e,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            task_id: wire.task_id.as_str().to_owned(),
            ticket: wire.ticket.as_str().to_owned(),
            audiences,
        })
    }

    /// The binding carried by a certificate (DER), if any.
    pub fn from_certificate(cert_der: &[u8]) -> Result<Option<Self>, TaskBindingError> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| {
            TaskBindingError::Malformed(format!("the certificate does not parse ({e})"))
        })?;
        cert.extensions()
            .iter()
            .find(|ext| ext.oid.to_id_string() == TASK_BINDING_OID_STR)
            .map(|ext| Self::from_der(ext.value))
            .transpose()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn binding(audiences: &[&str]) -> TaskBinding {
        TaskBinding {
            task_id: "task-0123456789abcdef".into(),
            ticket: "CHG-1234".into(),
            audiences: audiences.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn round_trips_and_matches_audiences() {
        let b = binding(&["spiffe://example.org/db", "spiffe://example.org/cache"]);
        let parsed = TaskBinding::from_der(&b.to_der().unwrap()).unwrap();
        assert_eq!(parsed, b);
        assert!(b.admits(&"spiffe://example.org/db".parse().unwrap()));
        assert!(!b.admits(&"spiffe://example.org/web".parse().unwrap()));
        assert!(binding(&[]).admits(&"spiffe://example.org/web".parse().unwrap()));
    }

    #[test]
    fn long_values_use_long_form_lengths() {
        let mut b = binding(&[]);
        b.ticket = "T".repeat(300);
        assert_eq!(TaskBinding::from_der(&b.to_der().unwrap()).unwrap(), b);
    }

    #[test]
    fn malformed_values_are_refused() {
        let der = binding(&["spiffe://example.org/db"]).to_der().unwrap();
        for cut in 1..der.len() {
            assert!(TaskBinding::from_der(&der[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(TaskBinding::from_der(&trailing).is_err());
        let bad_audience = TaskBinding {
            task_id: "t".into(),
            ticket: "c".into(),
            audiences: vec![],
        };
        let mut der = bad_audience.to_der().unwrap();
        // Replace the empty audience list with one bad ID.
        let bad = [&[0x30, 17, 0x0c, 15][..], b"not a spiffe id"].concat();
        der.truncate(der.len() - 2);
        der.extend(bad);
        der[1] = (der.len() - 2) as u8;
        let err = TaskBinding::from_der(&der).unwrap_err().to_string();
        assert!(err.contains("not a spiffe id"), "{err}");
    }

    #[test]
    fn non_minimal_lengths_are_refused() {
        let der = binding(&[]).to_der().unwrap();
        // The same content with the outer length in long form (0x81 n):
        // valid BER, not DER.
        let mut long = vec![0x30, 0x81, der[1]];
        long.extend_from_slice(&der[2..]);
        assert!(TaskBinding::from_der(&long).is_err());
    }

    #[test]
    fn the_extension_is_found_in_a_certificate_and_is_not_critical() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let b = binding(&["spiffe://example.org/db"]);
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                TASK_BINDING_OID,
                b.to_der().unwrap(),
            ));
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(TaskBinding::from_certificate(cert.der()).unwrap(), Some(b));
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        let ext = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == TASK_BINDING_OID_STR)
            .unwrap();
        assert!(!ext.critical);
        let plain = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(TaskBinding::from_certificate(plain.der()).unwrap(), None);
    }
}
