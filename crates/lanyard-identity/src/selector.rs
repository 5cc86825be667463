//! Selectors (`type:key:value`) and entry matching.

/// A selector such as `unix:uid:1000` or `cgroup:path:/system.slice/*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// `unix`, `cgroup`, `join_token`, `x509pop`.
    pub kind: String,
    /// `uid`, `gid`, `user`, `group`, `path`, `sha256`, `id`, `subject`.
    pub key: String,
    /// Everything after the second `:` (may itself contain `:`).
    pub value: String,
}

// TO IMPLEMENT (helper): FromStr (validated), Display, Serialize/Deserialize as "type:key:value",
// impl Selector { pub fn new(kind, key, value) -> Result<Self, SelectorError>;
//                 pub fn matches(&self, workload: &Selector) -> bool /* cgroup:path is a glob */ }
// pub fn matches_all(entry: &[Selector], workload: &[Selector]) -> bool
