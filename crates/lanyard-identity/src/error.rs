//! Errors of this crate. TO IMPLEMENT (helper): IdError, SelectorError, ProfileError.
