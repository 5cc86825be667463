//! Servers on PostgreSQL: a fresh database of the test binary's one
//! throwaway cluster (lanyard-test-postgres), named in a config file's
//! `[datastore]` through `url_file`, as an operator would.

use std::path::PathBuf;

use super::Server;

/// A config file (kept in `dir`) whose `[datastore]` is a new, empty
/// PostgreSQL database.
pub fn postgres_config(dir: &tempfile::TempDir) -> PathBuf {
    postgres_config_for(dir, &lanyard_test_postgres::shared().create_database())
}

/// A config file (kept in `dir`) whose `[datastore]` is the database at
/// `url`, the URL in a 0600 file beside it.
pub fn postgres_config_for(dir: &tempfile::TempDir, url: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let url_file = dir.path().join("datastore-url");
    std::fs::write(&url_file, format!("{url}\n")).unwrap();
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[datastore]\nkind = \"postgres\"\nurl_file = {:?}\npool_size = 4\nstatement_timeout = \"20s\"\n",
            url_file.display().to_string()
        ),
    )
    .unwrap();
    config
}

/// A server whose records live in a new PostgreSQL database.
pub fn start_on_postgres() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config(&dir);
    let mut server = Server::start_with(&["--config", config.to_str().unwrap()]);
    server.keep.push(dir);
    server
}
