#![allow(clippy::unwrap_used)]

use super::*;

/// A literal with incremental indexing and a new name, as gRPC's C core
/// sends `:authority`.
fn literal_new_name(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut block = vec![0x40];
    encode_integer(&mut block, 0x00, 7, name.len());
    block.extend_from_slice(name);
    encode_integer(&mut block, 0x00, 7, value.len());
    block.extend_from_slice(value);
    block
}

/// A literal with the name at `index`, the value Huffman-coded or not.
fn literal_indexed_name(flags: u8, prefix: u32, index: usize, value: &[u8], huff: bool) -> Vec<u8> {
    let mut block = Vec::new();
    encode_integer(&mut block, flags, prefix, index);
    if huff {
        let coded = huffman::encode(value);
        encode_integer(&mut block, 0x80, 7, coded.len());
        block.extend_from_slice(&coded);
    } else {
        encode_integer(&mut block, 0x00, 7, value.len());
        block.extend_from_slice(value);
    }
    block
}

fn table(rewriter: &BlockRewriter) -> Vec<(Vec<u8>, usize)> {
    rewriter.entries.iter().cloned().collect()
}

#[test]
fn rewrites_a_c_core_percent_encoded_authority_and_keeps_the_table_in_step() {
    let value = b"%2Ftmp%2F.tmpQ1%2Fapi.sock";
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    block.extend(literal_new_name(b":authority", value));
    block.extend(literal_new_name(b"te", b"trailers"));

    let mut client = BlockRewriter::default();
    let sent = client.rewrite(&block).unwrap().unwrap();
    let mut expected = vec![0x83, 0x86];
    expected.extend(literal_new_name(
        b":authority",
        b"_2Ftmp_2F.tmpQ1_2Fapi.sock",
    ));
    expected.extend(literal_new_name(b"te", b"trailers"));
    assert_eq!(sent, expected);

    // The server, reading what was sent, builds a table of the same shape.
    let mut server = BlockRewriter::default();
    assert_eq!(server.rewrite(&sent).unwrap(), None);
    assert_eq!(table(&client), table(&server));

    // The next request refers to the entry by index: nothing to change.
    assert_eq!(client.rewrite(&[0x83, 0x86, 0xbf, 0xbe]).unwrap(), None);
}

#[test]
fn rewrites_a_raw_path_by_static_name_in_every_literal_form() {
    let path = b"/run/lanyard/agent/api.sock";
    for (flags, prefix) in [(0x40, 6), (0x00, 4), (0x10, 4)] {
        for huff in [false, true] {
            let block = literal_indexed_name(flags, prefix, 1, path, huff);
            let sent = BlockRewriter::default().rewrite(&block).unwrap().unwrap();
            assert_eq!(
                sent,
                literal_indexed_name(flags, prefix, 1, b"_run_lanyard_agent_api.sock", false),
                "flags {flags:#x}, huffman {huff}"
            );
        }
    }
}

#[test]
fn follows_a_dynamic_name_reference_to_authority() {
    let mut rewriter = BlockRewriter::default();
    // Inserts (:authority, "localhost"): valid, untouched.
    let first = literal_indexed_name(0x40, 6, 1, b"localhost", true);
    assert_eq!(rewriter.rewrite(&first).unwrap(), None);
    // Then a path, naming :authority by its dynamic index (62).
    let block = literal_indexed_name(0x00, 4, 62, b"/x/api.sock", false);
    assert_eq!(
        rewriter.rewrite(&block).unwrap().unwrap(),
        literal_indexed_name(0x00, 4, 62, b"_x_api.sock", false)
    );
}

#[test]
fn leaves_valid_authorities_and_other_headers_alone() {
    let mut block = literal_indexed_name(0x40, 6, 1, b"localhost", false);
    // A path-like value under another name is not an authority.
    block.extend(literal_new_name(b"x-socket", b"/tmp/x/api.sock"));
    block.extend(literal_indexed_name(
        0x00,
        4,
        4,
        b"/SpiffeWorkloadAPI/FetchX509SVID",
        true,
    ));
    assert_eq!(BlockRewriter::default().rewrite(&block).unwrap(), None);
}

#[test]
fn evicts_as_the_client_does() {
    let mut rewriter = BlockRewriter::default();
    // Shrink the table to 64 bytes, then insert two 50-byte entries.
    let mut block = vec![0x3f, 0x21]; // size update: 31 + 33 = 64
    block.extend(literal_new_name(b"a", &[b'v'; 17]));
    block.extend(literal_new_name(b"b", &[b'v'; 17]));
    assert_eq!(rewriter.rewrite(&block).unwrap(), None);
    assert_eq!(table(&rewriter), vec![(b"b".to_vec(), 50)]);
    // Index 63 is gone.
    assert_eq!(
        rewriter.rewrite(&[0xbf]),
        Err(HpackError::BadIndex {
            index: 63,
            dynamic: 1
        })
    );
}

#[test]
fn reports_malformed_blocks() {
    let mut rewriter = BlockRewriter::default();
    assert_eq!(
        rewriter.rewrite(&[0x80]),
        Err(HpackError::BadIndex {
            index: 0,
            dynamic: 0
        })
    );
    assert_eq!(
        rewriter.rewrite(&[0x41, 0x05, b'a']),
        Err(HpackError::Truncated)
    );
    assert_eq!(rewriter.rewrite(&[0x41]), Err(HpackError::Truncated));
    assert_eq!(
        rewriter.rewrite(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Err(HpackError::IntegerOverflow)
    );
    assert_eq!(
        rewriter.rewrite(&[0x41, 0x81, 0x00]),
        Err(HpackError::Huffman)
    );
}
