#![allow(clippy::unwrap_used)]

use super::*;

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame_header(&mut out, payload.len(), kind, flags, stream_id);
    out.extend_from_slice(payload);
    out
}

/// `:method POST`, `:scheme http`, `:path /`, then `:authority` (static
/// name, plain literal with incremental indexing).
fn request_block(authority: &[u8]) -> Vec<u8> {
    let mut block = vec![
        0x83,
        0x86,
        0x84,
        0x41,
        u8::try_from(authority.len()).unwrap(),
    ];
    block.extend_from_slice(authority);
    block
}

const SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];

/// Feeds `input` one byte at a time, the hardest split.
fn bytewise(input: &[u8]) -> Vec<u8> {
    let mut stream = ClientStream::default();
    let mut out = Vec::new();
    for byte in input {
        stream.push(std::slice::from_ref(byte), &mut out);
    }
    stream.finish(&mut out);
    out
}

fn whole(input: &[u8]) -> Vec<u8> {
    let mut stream = ClientStream::default();
    let mut out = Vec::new();
    stream.push(input, &mut out);
    stream.finish(&mut out);
    out
}

#[test]
fn rewrites_the_authority_of_a_padded_prioritised_headers_frame() {
    let mut payload = vec![3]; // pad length
    payload.extend_from_slice(&[0x80, 0, 0, 0, 0x0f]); // priority
    payload.extend(request_block(b"/tmp/x/api.sock"));
    payload.extend_from_slice(&[0, 0, 0]);
    let data = frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]);
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(&SETTINGS);
    input.extend(frame(HEADERS, END_HEADERS | PADDED | PRIORITY, 1, &payload));
    input.extend_from_slice(&data);

    let mut expected = PREFACE.to_vec();
    expected.extend_from_slice(&SETTINGS);
    let mut rewritten = vec![0x80, 0, 0, 0, 0x0f];
    rewritten.extend(request_block(b"_tmp_x_api.sock"));
    expected.extend(frame(HEADERS, END_HEADERS | PRIORITY, 1, &rewritten));
    expected.extend_from_slice(&data);

    assert_eq!(whole(&input), expected);
    assert_eq!(bytewise(&input), expected);
}

#[test]
fn joins_continuations_and_keeps_end_stream() {
    let block = request_block(b"%2Fx%2Fapi.sock");
    let (a, b) = block.split_at(4);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_STREAM, 3, a));
    input.extend(frame(CONTINUATION, END_HEADERS, 3, b));

    let mut expected = PREFACE.to_vec();
    expected.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        3,
        &request_block(b"_2Fx_2Fapi.sock"),
    ));
    assert_eq!(whole(&input), expected);
    assert_eq!(bytewise(&input), expected);
}

#[test]
fn copies_everything_else_byte_for_byte() {
    let mut input = PREFACE.to_vec();
    input.extend_from_slice(&SETTINGS);
    input.extend(frame(HEADERS, END_HEADERS, 1, &request_block(b"localhost")));
    input.extend(frame(0x0, 0, 1, &[7; 40_000][..16_000]));
    input.extend(frame(0x8, 0, 0, &[0, 0, 1, 0]));
    assert_eq!(whole(&input), input);
    assert_eq!(bytewise(&input), input);
}

#[test]
fn passes_through_what_it_does_not_expect() {
    let path_block = frame(HEADERS, END_HEADERS, 5, &request_block(b"/tmp/api.sock"));
    let cases: Vec<Vec<u8>> = vec![
        // Not HTTP/2 at all.
        [b"GET / HTTP/1.1\r\n\r\n".to_vec(), path_block.clone()].concat(),
        // A header frame over 16 KiB.
        [
            PREFACE.to_vec(),
            frame(HEADERS, END_HEADERS, 1, &[0x80; 16_385]),
            path_block.clone(),
        ]
        .concat(),
        // A block interrupted by another frame.
        [
            PREFACE.to_vec(),
            frame(HEADERS, 0, 1, &[0x83]),
            SETTINGS.to_vec(),
            path_block.clone(),
        ]
        .concat(),
        // An undecodable block (index 0), then a rewritable one.
        [
            PREFACE.to_vec(),
            frame(HEADERS, END_HEADERS, 1, &[0x80]),
            path_block.clone(),
        ]
        .concat(),
        // Padding longer than the frame.
        [
            PREFACE.to_vec(),
            frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x83]),
            path_block,
        ]
        .concat(),
    ];
    for input in cases {
        assert_eq!(whole(&input), input);
        assert_eq!(bytewise(&input), input);
    }
}

#[test]
fn a_truncated_connection_reaches_the_server_as_sent() {
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &request_block(b"/tmp/api.sock"),
    ));
    input.truncate(input.len() - 3);
    assert_eq!(whole(&input), input);
}

#[test]
fn splits_a_grown_block_into_continuations() {
    // A Huffman-coded path grows when sent plain: make the block need two
    // frames afterwards.
    let path = b"/a/api.sock";
    let coded = crate::huffman::encode(path);
    let mut block = Vec::new();
    for _ in 0..1_600 {
        block.extend_from_slice(&[0x01, 0x80 | u8::try_from(coded.len()).unwrap()]);
        block.extend_from_slice(&coded);
    }
    assert!(block.len() <= MAX_FRAME);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &block));

    let out = whole(&input);
    let frames = &out[PREFACE.len()..];
    let first = usize::from(frames[1]) << 8 | usize::from(frames[2]);
    assert_eq!(first, MAX_FRAME);
    assert_eq!((frames[3], frames[4]), (HEADERS, 0));
    let second = &frames[FRAME_HEADER + first..];
    assert_eq!((second[3], second[4]), (CONTINUATION, END_HEADERS));
    let rest = &second[FRAME_HEADER..];
    let mut joined = frames[FRAME_HEADER..FRAME_HEADER + first].to_vec();
    joined.extend_from_slice(rest);
    let one = [&[0x01, 0x0b][..], b"_a_api.sock"].concat();
    assert_eq!(joined, one.repeat(1_600));
}
