//! Which `:authority` values the shim replaces, and with what.
//!
//! Only a value the HTTP/2 server would refuse *and* that is a Unix socket
//! path, raw (`/run/lanyard/agent/api.sock`, as grpc-java and grpc-swift
//! send) or percent-encoded (`run%2Flanyard%2Fagent%2Fapi.sock`, without the
//! leading `/`, as gRPC's C core sends since 1.57). Any other value is left as the client
//! sent it, so a malformed authority is still refused.

/// Longest Unix socket path (`sun_path` holds 108 bytes, NUL included).
const MAX_SOCKET_PATH: usize = 107;

/// Whether `value` should be replaced: h2 refuses it and it is a socket path.
pub(crate) fn is_refused_socket_path(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_err() && is_socket_path(value)
}

/// A socket path: visible ASCII only; once `%XX` escapes are decoded, at
/// most [`MAX_SOCKET_PATH`] bytes with at least one `/` and no control byte.
fn is_socket_path(value: &[u8]) -> bool {
    if value.is_empty() || !value.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return false;
    }
    let Some(path) = percent_decode(value) else {
        return false;
    };
    path.len() <= MAX_SOCKET_PATH
        && path.contains(&b'/')
        && !path.iter().any(|b| b.is_ascii_control())
}

fn percent_decode(value: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hi = hex(*bytes.next()?)?;
            let lo = hex(*bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The replacement: as many bytes as `value` (so that HPACK dynamic table
/// sizes stay the same on both sides), each letter, digit, `-` and `.` kept
/// and every other byte made `_`. `/run/a.sock` becomes `_run_a.sock`, a
/// valid reg-name.
pub(crate) fn placeholder(value: &[u8]) -> Vec<u8> {
    value
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'.' {
                b
            } else {
                b'_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_raw_and_percent_encoded_socket_paths() {
        for value in [
            &b"/run/lanyard/agent/api.sock"[..],
            b"%2Frun%2Flanyard%2Fagent%2Fapi.sock",
            // grpcio 1.85 for `unix:/tmp/.tmpAbC/api.sock`.
            b"tmp%2F.tmpAbC%2Fapi.sock",
            b"%2ftmp%2f.tmpAbC%2fapi.sock",
            b"relative/api.sock",
            b"/tmp/a:b/api.sock",
        ] {
            assert!(is_refused_socket_path(value), "{value:?}");
            let new = placeholder(value);
            assert_eq!(new.len(), value.len());
            assert!(http::uri::Authority::try_from(&new[..]).is_ok(), "{new:?}");
        }
        assert_eq!(placeholder(b"/run/a.sock"), b"_run_a.sock");
    }

    #[test]
    fn leaves_valid_and_other_invalid_authorities_alone() {
        for value in [
            &b"localhost"[..],
            b"example.com:8443",
            b"api.sock",
            b"[::1]:80",
        ] {
            assert!(!is_refused_socket_path(value), "{value:?}");
        }
        for value in [
            &b""[..],
            b"bad host",
            b"a\"b",
            b"%zz/x",
            b"%2Fx%00y",
            b"%",
            &[b'/'; MAX_SOCKET_PATH + 1][..],
        ] {
            assert!(!is_refused_socket_path(value), "{value:?}");
        }
    }
}
