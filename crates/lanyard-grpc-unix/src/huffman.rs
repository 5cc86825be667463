//! HPACK Huffman decoding (RFC 7541, section 5.2 and Appendix B), through
//! the `httlib-huffman` crate.
//!
//! A literal is accepted only if it is exactly the canonical encoding of
//! what it decodes to: the padding is the most significant bits of EOS (all
//! ones) and shorter than a byte, and no EOS or over-long code appears. That
//! is what h2, the server behind the shim, requires, so the shim never reads
//! a literal differently from it.

use httlib_huffman::{DecoderSpeed, decode as huffman_decode, encode as huffman_encode};

use crate::error::HpackError;

/// Decodes a Huffman-coded string literal, refusing any that is not the
/// canonical encoding of its result.
pub(crate) fn decode(src: &[u8]) -> Result<Vec<u8>, HpackError> {
    let mut out = Vec::with_capacity(src.len() * 8 / 5);
    huffman_decode(src, &mut out, DecoderSpeed::FourBits).map_err(|_| HpackError::Huffman)?;
    if encode(&out) != src {
        return Err(HpackError::Huffman);
    }
    Ok(out)
}

/// Huffman-codes `src` canonically (padding with ones).
pub(crate) fn encode(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    // Every byte has a code, so encoding cannot fail.
    match huffman_encode(src, &mut out) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_rfc_examples() {
        // RFC 7541, C.4.1: "www.example.com".
        let coded = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        assert_eq!(decode(&coded).unwrap(), b"www.example.com");
        // C.4.2: "no-cache".
        assert_eq!(
            decode(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]).unwrap(),
            b"no-cache"
        );
        assert_eq!(decode(&[]).unwrap(), b"");
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=u8::MAX).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
        assert_eq!(encode(b"www.example.com")[0], 0xf1);
    }

    #[test]
    fn refuses_bad_padding() {
        // "a" (00011) with its padding bits cleared instead of set.
        assert_eq!(decode(&[0x1f]).unwrap(), b"a");
        assert_eq!(decode(&[0x18]), Err(HpackError::Huffman));
        // A whole byte of padding.
        assert_eq!(decode(&[0xff]), Err(HpackError::Huffman));
        // EOS itself (30 ones).
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xfc]), Err(HpackError::Huffman));
    }
}
