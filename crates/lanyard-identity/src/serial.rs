//! Certificate serial numbers in their one canonical form.
//!
//! A serial is written many ways: `svid list` and the store print lower-case
//! hex, OpenSSL prints upper-case hex with colons, people paste either with
//! or without leading zeros. [`Serial`] accepts all of them and always prints
//! the same thing: lower-case hex of the INTEGER's value in whole bytes,
//! without leading zero bytes (`0abc` for 0x0ABC). It is the form the store
//! keys SVIDs by, the CRL lists and the Workload API compares.

use std::{fmt, str::FromStr};

/// Longest serial accepted, in significant bytes (RFC 5280 allows 20 octets;
/// a JWT-SVID `jti` is drawn from the same space).
pub const MAX_SERIAL_BYTES: usize = 20;

/// A serial number in canonical form: parsed from any way of writing it
/// (any case, colons, leading zeros), printed as lower-case hex of whole
/// bytes without leading zero bytes.
///
/// ```
/// use lanyard_identity::Serial;
/// let s: Serial = "00:0A:BC".parse().unwrap();
/// assert_eq!(s.as_str(), "0abc");
/// assert_eq!(s, "abc".parse().unwrap());
/// assert_eq!(s.to_der_content(), vec![0x0a, 0xbc]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(String);

/// A serial that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SerialError {
    /// Not hexadecimal digits (optionally separated by colons), or empty.
    #[error(
        "invalid serial {input:?}: expected hexadecimal digits, optionally separated by colons (as `svid list` or `openssl x509 -serial` print them)"
    )]
    NotHex {
        /// What was given.
        input: String,
    },
    /// More significant bytes than a certificate serial can have.
    #[error("invalid serial {input:?}: it is {bytes} bytes long; at most {max} are accepted")]
    TooLong {
        /// What was given.
        input: String,
        /// Its significant length in bytes.
        bytes: usize,
        /// The limit ([`MAX_SERIAL_BYTES`]).
        max: usize,
    },
}

impl Serial {
    /// Parses a serial as people write it: any case, colons between digits,
    /// leading zeros and surrounding white space allowed.
    pub fn parse(input: &str) -> Result<Self, SerialError> {
        let not_hex = || SerialError::NotHex {
            input: input.to_owned(),
        };
        let text = input.trim();
        if text.is_empty() || text.starts_with(':') || text.ends_with(':') || text.contains("::") {
            return Err(not_hex());
        }
        let digits: String = text
            .chars()
            .filter(|c| *c != ':')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_hex());
        }
        let significant = digits.trim_start_matches('0');
        let canonical = if significant.len() % 2 == 1 {
            format!("0{significant}")
        } else {
            significant.to_owned()
        };
        if canonical.len() / 2 > MAX_SERIAL_BYTES {
            return Err(SerialError::TooLong {
                input: input.to_owned(),
                bytes: canonical.len() / 2,
                max: MAX_SERIAL_BYTES,
            });
        }
        Ok(Self::canonical(canonical))
    }

    /// The serial whose value is these big-endian bytes (an INTEGER's content
    /// octets, leading zero bytes allowed).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        Self::canonical(hex::encode(&bytes[start..]))
    }

    /// Zero is written `00`, so that every serial is whole bytes.
    fn canonical(hex: String) -> Self {
        if hex.is_empty() {
            Self("00".into())
        } else {
            Self(hex)
        }
    }

    /// The canonical text: lower-case hex, whole bytes, no leading zero bytes.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical text, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The content octets of this serial as a positive DER INTEGER: its bytes,
    /// with a 0x00 prefix when the top bit is set.
    pub fn to_der_content(&self) -> Vec<u8> {
        // The canonical text is whole bytes of hex digits by construction.
        let mut bytes = hex::decode(&self.0).unwrap_or_default();
        if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            bytes.insert(0, 0);
        }
        bytes
    }
}

impl FromStr for Serial {
    type Err = SerialError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Serial {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<Serial> for String {
    fn from(serial: Serial) -> Self {
        serial.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Serial::parse(s).unwrap().into_string()
    }

    #[test]
    fn every_way_of_writing_a_serial_gives_one_form() {
        assert_eq!(canon("00:0A:BC"), "0abc");
        assert_eq!(canon("abc"), "0abc");
        assert_eq!(canon("0ABC"), "0abc");
        assert_eq!(canon(" 7F01 "), "7f01");
        assert_eq!(canon("00:AB:cd"), "abcd");
        assert_eq!(canon("000"), "00");
        assert_eq!(
            Serial::parse("7f:01").unwrap(),
            Serial::parse("7F01").unwrap()
        );
    }

    #[test]
    fn bytes_and_text_agree() {
        assert_eq!(Serial::from_bytes(&[0, 0x0a, 0xbc]).as_str(), "0abc");
        assert_eq!(Serial::from_bytes(&[0x40, 0x01]).as_str(), "4001");
        assert_eq!(Serial::from_bytes(&[]).as_str(), "00");
        for text in ["0abc", "4001", "ff", "00"] {
            let s = Serial::parse(text).unwrap();
            let content = s.to_der_content();
            assert_eq!(Serial::from_bytes(&content), s, "{text}");
        }
    }

    #[test]
    fn der_content_is_a_positive_integer() {
        assert_eq!(Serial::parse("ff").unwrap().to_der_content(), vec![0, 0xff]);
        assert_eq!(Serial::parse("7f").unwrap().to_der_content(), vec![0x7f]);
        assert_eq!(Serial::parse("0").unwrap().to_der_content(), vec![0]);
    }

    #[test]
    fn refuses_what_is_not_a_serial_and_says_what_is_accepted() {
        for bad in ["", "  ", "xyz", "0x1f", "ab:", ":ab", "a::b", "12 34", "-1"] {
            let err = Serial::parse(bad).unwrap_err();
            assert!(matches!(err, SerialError::NotHex { .. }), "{bad:?}");
            assert!(err.to_string().contains("hexadecimal digits"), "{err}");
        }
        let long = "01".repeat(MAX_SERIAL_BYTES + 1);
        assert!(matches!(
            Serial::parse(&long),
            Err(SerialError::TooLong { bytes: 21, .. })
        ));
        // Leading zeros do not count towards the length.
        let padded = format!("0000{}", "7f".repeat(MAX_SERIAL_BYTES));
        assert!(Serial::parse(&padded).is_ok());
    }
}
