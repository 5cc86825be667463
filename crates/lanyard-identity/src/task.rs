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

const SEQUENCE: u8 = 0x30;
const UTF8_STRING: u8 = 0x0c;

impl TaskBinding {
    /// Whether a server with this SPIFFE ID may accept the SVID.
    pub fn admits(&self, server: &SpiffeId) -> bool {
        self.audiences.is_empty() || self.audiences.contains(server)
    }

    /// The DER extension value (`LanyardTaskBinding`).
    pub fn to_der(&self) -> Vec<u8> {
        let audiences: Vec<u8> = self
            .audiences
            .iter()
            .flat_map(|a| tlv(UTF8_STRING, a.as_str().as_bytes()))
            .collect();
        let mut body = tlv(UTF8_STRING, self.task_id.as_bytes());
        body.extend(tlv(UTF8_STRING, self.ticket.as_bytes()));
        body.extend(tlv(SEQUENCE, &audiences));
        tlv(SEQUENCE, &body)
    }

    /// Parses the DER extension value.
    pub fn from_der(der: &[u8]) -> Result<Self, TaskBindingError> {
        let (body, rest) = read(der, SEQUENCE)?;
        if !rest.is_empty() {
            return Err(TaskBindingError::Malformed(
                "trailing bytes after the binding",
            ));
        }
        let (task_id, body) = read_string(body)?;
        let (ticket, body) = read_string(body)?;
        let (mut list, body) = read(body, SEQUENCE)?;
        if !body.is_empty() {
            return Err(TaskBindingError::Malformed(
                "trailing bytes inside the binding",
            ));
        }
        let mut audiences = Vec::new();
        while !list.is_empty() {
            let (audience, next) = read_string(list)?;
            audiences.push(audience.parse().map_err(|e| TaskBindingError::Audience {
                audience,
                source: e,
            })?);
            list = next;
        }
        Ok(Self {
            task_id,
            ticket,
            audiences,
        })
    }

    /// The binding carried by a certificate (DER), if any.
    pub fn from_certificate(cert_der: &[u8]) -> Result<Option<Self>, TaskBindingError> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|_| TaskBindingError::Malformed("the certificate does not parse"))?;
        cert.extensions()
            .iter()
            .find(|ext| ext.oid.to_id_string() == TASK_BINDING_OID_STR)
            .map(|ext| Self::from_der(ext.value))
            .transpose()
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Reads one element with `tag`; returns its content and what follows.
fn read(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), TaskBindingError> {
    let (&found, rest) = input
        .split_first()
        .ok_or(TaskBindingError::Malformed("truncated"))?;
    if found != tag {
        return Err(TaskBindingError::Malformed("unexpected element type"));
    }
    let (&first, rest) = rest
        .split_first()
        .ok_or(TaskBindingError::Malformed("truncated length"))?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(TaskBindingError::Malformed("bad length"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(TaskBindingError::Malformed("truncated content"));
    }
    Ok(rest.split_at(len))
}

fn read_string(input: &[u8]) -> Result<(String, &[u8]), TaskBindingError> {
    let (content, rest) = read(input, UTF8_STRING)?;
    let s = std::str::from_utf8(content)
        .map_err(|_| TaskBindingError::Malformed("a string is not UTF-8"))?;
    Ok((s.to_owned(), rest))
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
        let parsed = TaskBinding::from_der(&b.to_der()).unwrap();
        assert_eq!(parsed, b);
        assert!(b.admits(&"spiffe://example.org/db".parse().unwrap()));
        assert!(!b.admits(&"spiffe://example.org/web".parse().unwrap()));
        assert!(binding(&[]).admits(&"spiffe://example.org/web".parse().unwrap()));
    }

    #[test]
    fn long_values_use_long_form_lengths() {
        let mut b = binding(&[]);
        b.ticket = "T".repeat(300);
        assert_eq!(TaskBinding::from_der(&b.to_der()).unwrap(), b);
    }

    #[test]
    fn malformed_values_are_refused() {
        let der = binding(&["spiffe://example.org/db"]).to_der();
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
        let mut der = bad_audience.to_der();
        // Replace the empty audience list with one bad ID.
        let bad = tlv(SEQUENCE, &tlv(UTF8_STRING, b"not a spiffe id"));
        der.truncate(der.len() - 2);
        der.extend(bad);
        der[1] = (der.len() - 2) as u8;
        let err = TaskBinding::from_der(&der).unwrap_err().to_string();
        assert!(err.contains("not a spiffe id"), "{err}");
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
                b.to_der(),
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
