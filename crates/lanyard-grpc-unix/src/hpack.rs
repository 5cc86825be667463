//! An HPACK header block reader that rewrites one thing: an `:authority`
//! literal holding a Unix socket path.
//!
//! It follows the client's dynamic table (names and entry sizes) so that it
//! can read every block, and it changes nothing that table depends on: the
//! rewritten literal keeps its representation (same indexing mode, same name
//! reference) and a value of the same length, so the server's table holds
//! entries of the same sizes, at the same indices, evicted at the same time
//! as the client's. Every other byte of the block is copied unchanged.

use std::collections::VecDeque;

use crate::{authority, error::HpackError, huffman};

/// Entries of RFC 7541 Appendix A, by index - 1; only the names matter here.
const STATIC_NAMES: [&[u8]; 61] = [
    b":authority",
    b":method",
    b":method",
    b":path",
    b":path",
    b":scheme",
    b":scheme",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b":status",
    b"accept-charset",
    b"accept-encoding",
    b"accept-language",
    b"accept-ranges",
    b"accept",
    b"access-control-allow-origin",
    b"age",
    b"allow",
    b"authorization",
    b"cache-control",
    b"content-disposition",
    b"content-encoding",
    b"content-language",
    b"content-length",
    b"content-location",
    b"content-range",
    b"content-type",
    b"cookie",
    b"date",
    b"etag",
    b"expect",
    b"expires",
    b"from",
    b"host",
    b"if-match",
    b"if-modified-since",
    b"if-none-match",
    b"if-range",
    b"if-unmodified-since",
    b"last-modified",
    b"link",
    b"location",
    b"max-forwards",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"range",
    b"referer",
    b"refresh",
    b"retry-after",
    b"server",
    b"set-cookie",
    b"strict-transport-security",
    b"transfer-encoding",
    b"user-agent",
    b"vary",
    b"via",
    b"www-authenticate",
];

/// SETTINGS_HEADER_TABLE_SIZE's initial value (RFC 9113, section 6.5.2);
/// h2's server, as tonic runs it, never announces another.
const INITIAL_TABLE_SIZE: usize = 4096;

/// Bytes an entry counts beyond its name and value (RFC 7541, 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The client's dynamic table, as far as this reader needs it.
#[derive(Debug)]
pub(crate) struct BlockRewriter {
    /// Newest first: (name, entry size).
    entries: VecDeque<(Vec<u8>, usize)>,
    size: usize,
    max_size: usize,
}

impl Default for BlockRewriter {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size: INITIAL_TABLE_SIZE,
        }
    }
}

/// A string literal: where it is in the block, and its decoded octets.
struct Literal {
    start: usize,
    end: usize,
    octets: Vec<u8>,
}

impl BlockRewriter {
    /// Reads one complete header block. `Ok(None)`: nothing to change, send
    /// the block as it is; `Ok(Some(block))`: send this one instead.
    ///
    /// After an error the table may be out of step with the client's: the
    /// caller must stop rewriting this connection.
    pub(crate) fn rewrite(&mut self, block: &[u8]) -> Result<Option<Vec<u8>>, HpackError> {
        let mut out: Option<Vec<u8>> = None;
        let mut pos = 0;
        while pos < block.len() {
            let start = pos;
            let first = block[pos];
            if first & 0x80 != 0 {
                // Indexed field: refers to an entry, inserts nothing.
                let (index, next) = integer(block, pos, 7)?;
                self.name(index)?;
                pos = next;
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update.
                let (size, next) = integer(block, pos, 5)?;
                self.max_size = size;
                self.evict(0);
                pos = next;
            } else {
                // Literal: with incremental indexing (01), without indexing
                // (0000) or never indexed (0001).
                let indexing = first & 0xc0 == 0x40;
                let (index, next) = integer(block, pos, if indexing { 6 } else { 4 })?;
                let name = if index == 0 {
                    let name = string(block, next)?;
                    pos = name.end;
                    name.octets
                } else {
                    pos = next;
                    self.name(index)?.to_vec()
                };
                let value = string(block, pos)?;
                pos = value.end;
                if name == b":authority" && authority::is_refused_socket_path(&value.octets) {
                    let out = out.get_or_insert_with(|| block[..start].to_vec());
                    out.extend_from_slice(&block[start..value.start]);
                    let replacement = authority::placeholder(&value.octets);
                    // A plain (not Huffman) literal of the same length.
                    encode_integer(out, 0x00, 7, replacement.len());
                    out.extend_from_slice(&replacement);
                    tracing::debug!(
                        authority = %String::from_utf8_lossy(&value.octets),
                        "replacing a socket-path :authority"
                    );
                } else if let Some(out) = out.as_mut() {
                    out.extend_from_slice(&block[start..pos]);
                }
                if indexing {
                    self.insert(name, value.octets.len());
                }
                continue;
            }
            if let Some(out) = out.as_mut() {
                out.extend_from_slice(&block[start..pos]);
            }
        }
        Ok(out)
    }

    fn name(&self, index: usize) -> Result<&[u8], HpackError> {
        let bad = || HpackError::BadIndex {
            index,
            dynamic: self.entries.len(),
        };
        match index {
            0 => Err(bad()),
            1..=61 => Ok(STATIC_NAMES[index - 1]),
            _ => self
                .entries
                .get(index - 62)
                .map(|(name, _)| name.as_slice())
                .ok_or_else(bad),
        }
    }

    fn insert(&mut self, name: Vec<u8>, value_len: usize) {
        let size = name.len() + value_len + ENTRY_OVERHEAD;
        // RFC 7541, 4.4: an entry larger than the table empties it.
        self.evict(size);
        if size <= self.max_size {
            self.size += size;
            self.entries.push_front((name, size));
        }
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.entries.pop_back() {
                Some((_, size)) => self.size -= size,
                None => break,
            }
        }
    }
}

/// An HPACK integer with an `n`-bit prefix at `block[pos]` (RFC 7541,
/// 5.1): its value and the position after it.
fn integer(block: &[u8], pos: usize, n: u32) -> Result<(usize, usize), HpackError> {
    let mask = (1_usize << n) - 1;
    let first = usize::from(*block.get(pos).ok_or(HpackError::Truncated)?);
    let mut value = first & mask;
    let mut pos = pos + 1;
    if value < mask {
        return Ok((value, pos));
    }
    let mut shift = 0_u32;
    loop {
        let byte = *block.get(pos).ok_or(HpackError::Truncated)?;
        pos += 1;
        // Five continuation bytes reach 2^35: more than any length or
        // index a block can carry.
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok((value, pos));
        }
    }
}

fn encode_integer(out: &mut Vec<u8>, flags: u8, n: u32, value: usize) {
    let mask = (1_usize << n) - 1;
    if value < mask {
        // `value < mask <= 127`: fits the prefix.
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// A string literal at `block[pos]` (RFC 7541, 5.2).
fn string(block: &[u8], pos: usize) -> Result<Literal, HpackError> {
    let huffman = *block.get(pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let (len, start) = integer(block, pos, 7)?;
    let end = start.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = block.get(start..end).ok_or(HpackError::Truncated)?;
    let octets = if huffman {
        huffman::decode(raw)?
    } else {
        raw.to_vec()
    };
    Ok(Literal {
        start: pos,
        end,
        octets,
    })
}

#[cfg(test)]
#[path = "hpack_tests.rs"]
mod tests;
