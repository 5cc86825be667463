//! gRPC over a Unix socket for any client, including those that send the
//! socket path as the HTTP/2 `:authority`.
//!
//! gRPC's C core (since 1.57: grpcio for Python, Ruby, PHP, py-spiffe),
//! grpc-java and grpc-swift derive `:authority` from a `unix:` target: the
//! socket path itself (`/run/lanyard/agent/api.sock`) or, from the C core,
//! its percent-encoding without the leading `/`
//! (`run%2Flanyard%2Fagent%2Fapi.sock`). Neither is
//! a valid URI authority, and h2 (under hyper and tonic) resets every such
//! stream with `PROTOCOL_ERROR`: the client sees `INTERNAL: Stream removed`.
//! SPIRE's agent (grpc-go) accepts them.
//!
//! # Where h2 refuses it, and why a shim
//!
//! h2 0.4's server parses `:authority` into `http::uri::Authority` in
//! `server::Peer::convert_poll_message`, after HPACK decoding, and resets
//! the stream if that fails. No h2, hyper or tonic setting changes this
//! (the upstream change, hyperium/h2#487, is unmerged), and a patched h2
//! would relax every HTTP/2 server in the binary, TLS ones included.
//!
//! So [`SocketPathAuthority`] wraps one accepted Unix connection and
//! rewrites, in the bytes the client sends, only an `:authority` literal
//! that h2 would refuse *and* that is a socket path (raw or
//! percent-encoded): its value becomes a same-length reg-name, each byte
//! other than a letter, digit, `-` or `.` replaced by `_`
//! (`/run/a.sock` → `_run_a.sock`). It is HPACK-aware without re-encoding:
//!
//! - it follows the client's dynamic table (names and sizes), decoding
//!   Huffman literals with the code table h2 uses, to read every block;
//! - the rewritten literal keeps its representation (indexing mode, name
//!   reference) and its decoded length, so both sides' tables keep entries
//!   of the same sizes at the same indices; every other byte of the block is
//!   copied unchanged, and other frames are copied as they are;
//! - a rewritten block is re-framed (HEADERS, then CONTINUATION frames of at
//!   most 16 KiB) with its END_STREAM and priority, without padding.
//!
//! Anything it does not expect (no HTTP/2 preface, a header frame over
//! 16 KiB, a header block over 64 KiB or interrupted by another frame, a
//! block it cannot decode) switches the connection to pass-through: h2 then
//! reads the client's own bytes and refuses them as it always has. Malformed
//! frames, oversized header lists and missing application headers are
//! therefore refused exactly as without the shim. Handlers never read
//! `:authority` on these sockets; the peer is the socket's other end.
//!
//! ```no_run
//! # async fn serve(listener: tokio::net::UnixListener) -> std::io::Result<()> {
//! use lanyard_grpc_unix::SocketPathAuthority;
//! let (stream, _) = listener.accept().await?;
//! let conn = SocketPathAuthority::new(stream);
//! // hand `conn` to tonic's `serve_with_incoming`; writes are untouched.
//! # let _ = conn;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod authority;
mod error;
mod frames;
mod hpack;
mod huffman;
mod io;

pub use self::{error::HpackError, io::SocketPathAuthority};
