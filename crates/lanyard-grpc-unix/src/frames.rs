//! The client-to-server half of an HTTP/2 connection, frame by frame:
//! header blocks go through [`BlockRewriter`], everything else is copied.
//!
//! Anything this reader does not expect (no client preface, a frame larger
//! than the smallest allowed maximum, a block interrupted by another frame,
//! a block it cannot decode) switches the connection to pass-through for
//! good: from then on the server gets the client's bytes unchanged, and
//! refuses them exactly as it does without the shim.

use crate::{error::HpackError, hpack::BlockRewriter};

/// The client connection preface (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value, which h2 keeps: larger header
/// frames are passed through for h2 to refuse.
const MAX_FRAME: usize = 16_384;
/// Largest header block (all its fragments) this reader buffers.
const MAX_BLOCK: usize = 64 * 1024;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// A header block waiting for its END_HEADERS.
#[derive(Debug)]
struct Pending {
    /// The frames exactly as received, sent as they are unless rewritten.
    original: Vec<u8>,
    fragment: Vec<u8>,
    stream_id: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
}

#[derive(Debug)]
enum Mode {
    Preface,
    Frames,
    PassThrough,
}

/// Reads the bytes a client sends, writes what the server should read.
#[derive(Debug)]
pub(crate) struct ClientStream {
    mode: Mode,
    input: Vec<u8>,
    /// Payload bytes of the current (not header) frame still to copy.
    copying: usize,
    pending: Option<Pending>,
    hpack: BlockRewriter,
}

impl Default for ClientStream {
    fn default() -> Self {
        Self {
            mode: Mode::Preface,
            input: Vec::new(),
            copying: 0,
            pending: None,
            hpack: BlockRewriter::default(),
        }
    }
}

impl ClientStream {
    /// Takes bytes read from the client; appends what to hand the server.
    pub(crate) fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if let Mode::PassThrough = self.mode {
            out.extend_from_slice(bytes);
            return;
        }
        let mut input = std::mem::take(&mut self.input);
        input.extend_from_slice(bytes);
        let mut pos = 0;
        while !matches!(self.mode, Mode::PassThrough) {
            match self.step(&input[pos..], out) {
                Some(used) => pos += used,
                None => break,
            }
        }
        if let Mode::PassThrough = self.mode {
            out.extend_from_slice(&input[pos..]);
        } else {
            input.drain(..pos);
            self.input = input;
        }
    }

    /// The client closed its side: whatever is held back goes on unchanged,
    /// for the server to see the same truncated stream.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        self.pass_through(out);
        out.append(&mut self.input);
    }

    fn pass_through(&mut self, out: &mut Vec<u8>) {
        if let Some(pending) = self.pending.take() {
            out.extend_from_slice(&pending.original);
        }
        self.mode = Mode::PassThrough;
    }

    fn give_up(&mut self, why: &str, out: &mut Vec<u8>) -> Option<usize> {
        tracing::debug!(
            reason = why,
            "HTTP/2 authority shim passing the connection through"
        );
        self.pass_through(out);
        Some(0)
    }

    /// Consumes what it can from the start of `input`: `None` when more
    /// bytes are needed.
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        if let Mode::Preface = self.mode {
            let n = input.len().min(PREFACE.len());
            if input[..n] != PREFACE[..n] {
                return self.give_up("no HTTP/2 client preface", out);
            }
            if n < PREFACE.len() {
                return None;
            }
            out.extend_from_slice(PREFACE);
            self.mode = Mode::Frames;
            return Some(PREFACE.len());
        }
        if self.copying > 0 {
            if input.is_empty() {
                return None;
            }
            let n = input.len().min(self.copying);
            out.extend_from_slice(&input[..n]);
            self.copying -= n;
            return Some(n);
        }
        let header = input.get(..FRAME_HEADER)?;
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let stream_id =
            u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;

        let continues = self.pending.as_ref().map(|p| p.stream_id);
        match (kind, continues) {
            (HEADERS, None) => {}
            (CONTINUATION, Some(id)) if id == stream_id => {}
            (_, Some(_)) => return self.give_up("header block interrupted", out),
            // Any other frame, or a stray CONTINUATION: copied as it is.
            (_, None) => {
                out.extend_from_slice(header);
                self.copying = len;
                return Some(FRAME_HEADER);
            }
        }
        if len > MAX_FRAME {
            return self.give_up("header frame larger than 16 KiB", out);
        }
        let frame = input.get(..FRAME_HEADER + len)?;
        let payload = &frame[FRAME_HEADER..];
        let pending = match self.pending.take() {
            Some(mut pending) => {
                pending.original.extend_from_slice(frame);
                pending.fragment.extend_from_slice(payload);
                pending
            }
            None => match headers_payload(flags, payload) {
                Some((priority, fragment)) => Pending {
                    original: frame.to_vec(),
                    fragment: fragment.to_vec(),
                    stream_id,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                },
                None => return self.give_up("malformed HEADERS padding or priority", out),
            },
        };
        let used = Some(frame.len());
        if pending.fragment.len() > MAX_BLOCK {
            self.pending = Some(pending);
            self.give_up("header block larger than 64 KiB", out);
            return used;
        }
        if flags & END_HEADERS == 0 {
            self.pending = Some(pending);
            return used;
        }
        match self.hpack.rewrite(&pending.fragment) {
            Ok(None) => out.extend_from_slice(&pending.original),
            Ok(Some(block)) => write_block(&pending, &block, out),
            Err(error) => {
                self.pending = Some(pending);
                self.undecodable(&error, out);
            }
        }
        used
    }

    fn undecodable(&mut self, error: &HpackError, out: &mut Vec<u8>) {
        tracing::debug!(%error, "HTTP/2 authority shim cannot read a header block");
        self.pass_through(out);
    }
}

/// A HEADERS payload without its padding: (priority, block fragment).
fn headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut rest = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*rest.first()?);
        rest = &rest[1..];
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        priority = Some(<[u8; 5]>::try_from(rest.get(..5)?).ok()?);
        rest = &rest[5..];
    }
    let end = rest.len().checked_sub(pad)?;
    Some((priority, &rest[..end]))
}

/// The rewritten block as a HEADERS frame and as many CONTINUATION frames
/// as it needs, without padding.
fn write_block(pending: &Pending, block: &[u8], out: &mut Vec<u8>) {
    let priority = pending.priority.as_ref().map_or(&[][..], |p| &p[..]);
    let first = block.len().min(MAX_FRAME - priority.len());
    let (head, mut rest) = block.split_at(first);
    let mut flags = if pending.end_stream { END_STREAM } else { 0 };
    if pending.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    frame_header(
        out,
        priority.len() + head.len(),
        HEADERS,
        flags,
        pending.stream_id,
    );
    out.extend_from_slice(priority);
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = tail;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        frame_header(out, chunk.len(), CONTINUATION, flags, pending.stream_id);
        out.extend_from_slice(chunk);
    }
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream_id: u32) {
    // `len <= MAX_FRAME`: fits 24 bits.
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream_id.to_be_bytes());
}

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
