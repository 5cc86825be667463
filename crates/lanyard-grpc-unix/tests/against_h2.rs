//! The shim in front of a real h2 server (the one under hyper and tonic):
//! socket-path authorities are served, and every malformed input gets the
//! very same answer, byte for byte, as from h2 without the shim.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use lanyard_grpc_unix::SocketPathAuthority;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::UnixStream,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = len[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn literal(flags: u8, name_index: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![flags | name_index, u8::try_from(value.len()).unwrap()];
    out.extend_from_slice(value);
    out
}

/// A GET request's block (`:method GET`, `:scheme http`, `:path /`) with
/// `:authority` (static name 1) as a plain literal with incremental indexing.
fn request(authority: &[u8]) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84];
    block.extend(literal(0x40, 1, authority));
    block
}

fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend_from_slice(&SETTINGS);
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

/// Runs an h2 server answering `200` on `io`.
async fn serve<T: AsyncRead + AsyncWrite + Unpin>(io: T) {
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((_request, mut respond))) = conn.accept().await {
        let response = http::Response::builder().status(200).body(()).unwrap();
        respond.send_response(response, true).ok();
    }
}

type Frame = (u8, u8, u32, Vec<u8>);

/// The frames (type, flags, stream, payload) the server sends in answer to
/// `input`, and whether it then closed the connection.
async fn answer(input: &[u8], shim: bool) -> (Vec<Frame>, bool) {
    let (mut client, server) = UnixStream::pair().unwrap();
    let task = if shim {
        tokio::spawn(serve(SocketPathAuthority::new(server)))
    } else {
        tokio::spawn(serve(server))
    };
    client.write_all(input).await.unwrap();
    // Everything the server says until it closes or is silent for 300 ms.
    let mut out = Vec::new();
    let mut buf = [0_u8; 4096];
    let mut closed = false;
    while let Ok(read) =
        tokio::time::timeout(Duration::from_millis(300), client.read(&mut buf)).await
    {
        match read {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("server ends with the connection")
        .unwrap();
    let mut frames = Vec::new();
    let mut rest = &out[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        frames.push((rest[3], rest[4], id, rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    (frames, closed)
}

fn kinds(frames: &[Frame], stream: u32) -> Vec<u8> {
    frames
        .iter()
        .filter(|f| f.2 == stream)
        .map(|f| f.0)
        .collect()
}

#[tokio::test]
async fn socket_path_authorities_are_served_and_refused_without_the_shim() {
    for authority in [
        &b"tmp%2F.tmpAbC%2Fapi.sock"[..],
        b"%2Frun%2Flanyard%2Fapi.sock",
        b"/run/lanyard/agent/api.sock",
    ] {
        let input = connection(&[
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &request(authority)),
            // The next request refers to the dynamic entry (index 62).
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                3,
                &[0x82, 0x86, 0x84, 0xbe],
            ),
        ]);
        let (with, _) = answer(&input, true).await;
        assert_eq!(kinds(&with, 1), [HEADERS], "{authority:?}: {with:?}");
        assert_eq!(kinds(&with, 3), [HEADERS], "{authority:?}: {with:?}");
        let (without, _) = answer(&input, false).await;
        assert_eq!(
            kinds(&without, 1),
            [RST_STREAM],
            "{authority:?}: {without:?}"
        );
    }
}

#[tokio::test]
async fn malformed_input_gets_the_same_answer_with_and_without_the_shim() {
    let path = b"/run/lanyard/agent/api.sock";
    let mut uppercase = request(b"localhost");
    uppercase.extend(literal(0x00, 0, b"X-Upper"));
    uppercase.extend_from_slice(&[1, b'v']);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "valid",
            connection(&[frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &request(b"localhost"),
            )]),
        ),
        (
            "authority that is not a path",
            connection(&[frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &request(b"no such host"),
            )]),
        ),
        (
            "HPACK index 0",
            connection(&[frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x80])]),
        ),
        (
            "bad index after a rewritten block",
            connection(&[
                frame(HEADERS, END_HEADERS | END_STREAM, 1, &request(path)),
                frame(
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    3,
                    &[0x82, 0x86, 0x84, 0xc0],
                ),
            ]),
        ),
        (
            "truncated literal",
            connection(&[frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &[0x82, 0x41, 0x09, b'a'],
            )]),
        ),
        (
            "uppercase header name",
            connection(&[frame(HEADERS, END_HEADERS | END_STREAM, 1, &uppercase)]),
        ),
        (
            "padding longer than the frame",
            connection(&[frame(HEADERS, END_HEADERS | 0x8, 1, &[200, 0x82])]),
        ),
        (
            "oversized frame",
            connection(&[frame(HEADERS, END_HEADERS, 1, &vec![0x82; 16_385])]),
        ),
        (
            "block interrupted",
            connection(&[frame(HEADERS, END_STREAM, 1, &[0x82]), SETTINGS.to_vec()]),
        ),
        (
            "stray CONTINUATION",
            connection(&[frame(0x9, END_HEADERS, 1, &request(path))]),
        ),
        (
            "even stream id",
            connection(&[frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                2,
                &request(b"localhost"),
            )]),
        ),
        (
            "no preface",
            [
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                frame(HEADERS, END_HEADERS, 1, &request(path)),
            ]
            .concat(),
        ),
    ];
    for (what, input) in cases {
        let with = answer(&input, true).await;
        let without = answer(&input, false).await;
        assert_eq!(with, without, "{what}");
        let (frames, closed) = &with;
        let refused = *closed || frames.iter().any(|f| f.0 == RST_STREAM || f.0 == GOAWAY);
        assert_eq!(refused, what != "valid", "{what}: {with:?}");
    }
}
