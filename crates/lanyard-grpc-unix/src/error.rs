//! Why the shim stopped reading a connection's header blocks.

/// A header block this shim could not follow. The shim then forwards the
/// connection's bytes untouched, and the HTTP/2 server refuses them exactly
/// as it would without the shim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HpackError {
    /// The block ends inside a representation.
    #[error("header block truncated")]
    Truncated,
    /// An integer does not fit in 32 bits.
    #[error("HPACK integer overflows")]
    IntegerOverflow,
    /// An index is 0 or beyond the static and dynamic tables.
    #[error("HPACK index {index} is not in the table (dynamic entries: {dynamic})")]
    BadIndex {
        /// The index the block refers to.
        index: usize,
        /// How many dynamic entries there are.
        dynamic: usize,
    },
    /// A Huffman-coded literal is malformed (bad code or padding).
    #[error("malformed Huffman literal")]
    Huffman,
}
