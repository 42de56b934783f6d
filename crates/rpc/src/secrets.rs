//! The secrets a set runs with, resolved once at start: the encryption key
//! for secrets at rest, the gateway's session secret, the token the parts
//! present to each other, and the database password of a compose or
//! Kubernetes deployment.
//!
//! Each comes from its setting, else from its file in
//! `security.secrets_dir`; `marketbridge up` creates missing ones in the data
//! folder, and `marketbridge secrets init DIR` creates them for a deployment.
//! Nothing is ever derived from another secret, and a value that appears in
//! the repository (or is not random) is refused.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use marketbridge_config::Config;
use marketbridge_core::crypto::{Cipher, random_token, sha256_hex};
use marketbridge_core::{Error, Result};
use std::path::{Path, PathBuf};

/// File of the encryption key.
pub const ENCRYPTION_KEY_FILE: &str = "encryption.key";
/// File of the session secret.
pub const SESSION_SECRET_FILE: &str = "session.secret";
/// File of the set's own service token.
pub const SERVICE_TOKEN_FILE: &str = "service.token";
/// File of the database password (compose, Kubernetes).
pub const DATABASE_PASSWORD_FILE: &str = "database.password";

/// Shortest accepted service token.
pub const MIN_TOKEN_LEN: usize = 32;

/// SHA-256 (hex) of values that were once committed to the repository as
/// examples or defaults. Whatever the file they came from, a deployment
/// using one of them has a key every reader of the repository knows.
const PUBLISHED: &[&str] = &[
    // The development key docker-compose.yml used to ship.
    "cf4051d6668b92dc8004b4bc27a0fc307737eb50037b49b5dd425d2fd267b88c",
];

/// Which secret a value is, for messages.
#[derive(Debug, Clone, Copy)]
enum Kind {
    EncryptionKey,
    SessionSecret,
    ServiceToken,
}

impl Kind {
    fn setting(self) -> &'static str {
        match self {
            Kind::EncryptionKey => "security.encryption_key",
            Kind::SessionSecret => "gateway.session_secret",
            Kind::ServiceToken => "security.service_token",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Kind::EncryptionKey => ENCRYPTION_KEY_FILE,
            Kind::SessionSecret => SESSION_SECRET_FILE,
            Kind::ServiceToken => SERVICE_TOKEN_FILE,
        }
    }

    /// The setting this secret fills.
    fn field(self, config: &mut Config) -> &mut String {
        match self {
            Kind::EncryptionKey => &mut config.security.encryption_key,
            Kind::SessionSecret => &mut config.gateway.session_secret,
            Kind::ServiceToken => &mut config.security.service_token,
        }
    }

    fn needed(self, needs: Needs) -> bool {
        match self {
            Kind::EncryptionKey => needs.encryption_key,
            Kind::SessionSecret => needs.session_secret,
            Kind::ServiceToken => needs.service_token,
        }
    }

    const ALL: [Kind; 3] = [Kind::EncryptionKey, Kind::SessionSecret, Kind::ServiceToken];

    fn generate(self) -> String {
        match self {
            Kind::EncryptionKey | Kind::SessionSecret => Cipher::generate_base64_key(),
            Kind::ServiceToken => random_token(32),
        }
    }
}

/// What a process needs of the secrets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// The encryption key (the account and provisioning services).
    pub encryption_key: bool,
    /// The session secret (the gateway).
    pub session_secret: bool,
    /// The service token (every part that calls or serves gRPC).
    pub service_token: bool,
}

impl Needs {
    /// Everything: a whole set in one process.
    pub fn all() -> Self {
        Self {
            encryption_key: true,
            session_secret: true,
            service_token: true,
        }
    }

    /// A service that keeps secrets at rest (account, provisioning).
    pub const SEALING_SERVICE: Self = Self {
        encryption_key: true,
        session_secret: false,
        service_token: true,
    };

    /// A service that keeps no secret at rest (billing).
    pub const SERVICE: Self = Self {
        encryption_key: false,
        session_secret: false,
        service_token: true,
    };

    /// The gateway.
    pub const GATEWAY: Self = Self {
        encryption_key: false,
        session_secret: true,
        service_token: true,
    };
}

/// `config` with the secrets `needs` names resolved from their files (never
/// generated) and validated: what a part running alone starts with.
pub fn resolved(config: &Config, needs: Needs) -> Result<Config> {
    let mut config = config.clone();
    resolve(&mut config, needs, false)?;
    Ok(config)
}

/// Fills the secrets `needs` names from their files in
/// `security.secrets_dir` (or, with `generate`, from files in the data
/// folder created on first use), adds the database password to the services'
/// PostgreSQL URLs that have none, and validates every secret. A missing
/// secret is an error naming the setting.
pub fn resolve(config: &mut Config, needs: Needs, generate: bool) -> Result<()> {
    let dir = secrets_dir(config, generate);
    for kind in Kind::ALL.into_iter().filter(|kind| kind.needed(needs)) {
        let value = obtain(kind.field(config), kind, dir.as_deref(), generate)?;
        *kind.field(config) = value;
    }
    if let Some(dir) = &dir {
        add_database_password(config, dir)?;
    }
    validate(config)
}

/// Fills every empty secret with a fresh random value (tests, demos, the
/// benchmark: sets that live as long as one process).
pub fn fill_ephemeral(config: &mut Config) {
    for kind in Kind::ALL {
        let value = kind.field(config);
        if value.is_empty() {
            *value = kind.generate();
        }
    }
}

/// Creates the secret files a deployment needs in `dir`, keeping those that
/// exist; returns the names of the files created.
pub fn init_dir(dir: &Path) -> Result<Vec<&'static str>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::unavailable(format!("cannot create {}: {e}", dir.display())))?;
    let mut created = Vec::new();
    for kind in Kind::ALL {
        let path = dir.join(kind.file());
        if !path.exists() {
            write_new(&path, &kind.generate(), 0o600)?;
            created.push(kind.file());
        }
    }
    // The database server's container reads this one under its own user.
    let path = dir.join(DATABASE_PASSWORD_FILE);
    if !path.exists() {
        write_new(&path, &random_token(24), 0o644)?;
        created.push(DATABASE_PASSWORD_FILE);
    }
    Ok(created)
}

fn secrets_dir(config: &Config, generate: bool) -> Option<PathBuf> {
    if !config.security.secrets_dir.is_empty() {
        Some(PathBuf::from(&config.security.secrets_dir))
    } else if generate {
        Some(PathBuf::from(&config.data.dir))
    } else {
        None
    }
}

fn obtain(current: &str, kind: Kind, dir: Option<&Path>, generate: bool) -> Result<String> {
    if !current.trim().is_empty() {
        return Ok(current.trim().to_owned());
    }
    if let Some(dir) = dir {
        let path = dir.join(kind.file());
        if let Some(value) = read_secret_file(&path)? {
            return Ok(value);
        }
        if generate {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::unavailable(format!("cannot create {}: {e}", dir.display())))?;
            let value = kind.generate();
            write_new(&path, &value, 0o600)?;
            tracing::warn!(
                path = %path.display(),
                setting = kind.setting(),
                "generated a development secret; give every deployment its own"
            );
            return Ok(value);
        }
    }
    Err(Error::validation(format!(
        "{} is not set: give it (or the file {} in security.secrets_dir; `marketbridge secrets init DIR` creates one)",
        kind.setting(),
        kind.file()
    )))
}

/// Checks every secret that is set: the encryption key is 32 random bytes,
/// the session secret at least 32 random bytes and not the encryption key,
/// the service token long enough, and none of them published.
pub fn validate(config: &Config) -> Result<()> {
    let key = config.security.encryption_key.trim();
    if !key.is_empty() {
        check_not_published(key, Kind::EncryptionKey)?;
        let bytes = decode(key).filter(|b| b.len() == 32).ok_or_else(|| {
            Error::validation("security.encryption_key must be base64 of 32 random bytes")
        })?;
        check_random(&bytes, Kind::EncryptionKey)?;
    }
    let session = config.gateway.session_secret.trim();
    if !session.is_empty() {
        check_not_published(session, Kind::SessionSecret)?;
        let bytes = decode(session).filter(|b| b.len() >= 32).ok_or_else(|| {
            Error::validation("gateway.session_secret must be base64 of at least 32 random bytes")
        })?;
        check_random(&bytes, Kind::SessionSecret)?;
        if decode(key).is_some_and(|k| k == bytes) {
            return Err(Error::validation(
                "gateway.session_secret must not be the encryption key",
            ));
        }
    }
    let token = config.security.service_token.trim();
    if !token.is_empty() {
        check_not_published(token, Kind::ServiceToken)?;
        if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::validation(format!(
                "security.service_token must be at least {MIN_TOKEN_LEN} visible characters"
            )));
        }
        check_random(token.as_bytes(), Kind::ServiceToken)?;
    }
    Ok(())
}

fn decode(text: &str) -> Option<Vec<u8>> {
    [&STANDARD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

fn check_not_published(value: &str, kind: Kind) -> Result<()> {
    if PUBLISHED.contains(&sha256_hex(value.as_bytes()).as_str()) {
        return Err(Error::validation(format!(
            "{} is a value published in marketbridge's repository; generate your own",
            kind.setting()
        )));
    }
    Ok(())
}

/// Refuses values that are plainly not random: 32 random bytes are almost
/// never all printable text (the odds are below 1 in 10^13), nor made of a
/// handful of distinct bytes. A service token is text by design, so only
/// its variety counts.
fn check_random(bytes: &[u8], kind: Kind) -> Result<()> {
    let mut distinct = bytes.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let printable = bytes.iter().all(|b| (0x20..0x7f).contains(b));
    let too_plain = match kind {
        Kind::ServiceToken => distinct.len() < 12,
        Kind::EncryptionKey | Kind::SessionSecret => printable || distinct.len() < 12,
    };
    if too_plain {
        return Err(Error::validation(format!(
            "{} is not random; generate it (for example `marketbridge secrets init DIR`)",
            kind.setting()
        )));
    }
    Ok(())
}

fn add_database_password(config: &mut Config, dir: &Path) -> Result<()> {
    let Some(password) = read_secret_file(&dir.join(DATABASE_PASSWORD_FILE))? else {
        return Ok(());
    };
    for url in [
        &mut config.account.database_url,
        &mut config.provisioning.database_url,
        &mut config.billing.database_url,
    ] {
        if let Some(with_password) = with_password(url, &password) {
            *url = with_password;
        }
    }
    Ok(())
}

/// `url` with `password` when it is a PostgreSQL URL naming a user and no
/// password.
fn with_password(url: &str, password: &str) -> Option<String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let mut parsed = url::Url::parse(url).ok()?;
    if parsed.username().is_empty() || parsed.password().is_some() {
        return None;
    }
    parsed.set_password(Some(password)).ok()?;
    Some(parsed.to_string())
}

/// The trimmed contents of a secret file; `None` when it is missing or
/// empty, an error when it cannot be read.
fn read_secret_file(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::unavailable(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(|e| Error::unavailable(format!("cannot write {}: {e}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| Error::unavailable(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(key: &str, session: &str, token: &str) -> Config {
        let mut config = Config::default();
        config.security.encryption_key = key.into();
        config.gateway.session_secret = session.into();
        config.security.service_token = token.into();
        config
    }

    #[test]
    fn generated_secrets_pass() {
        let mut config = Config::default();
        fill_ephemeral(&mut config);
        validate(&config).unwrap();
    }

    #[test]
    fn the_key_compose_used_to_ship_is_refused() {
        let old = "bWFya2V0YnJpZGdlLWRldi1rZXktbm90LXNlY3JldCE=";
        let error = validate(&config_with(old, "", "")).unwrap_err();
        assert!(error.message().contains("published"), "{error}");
    }

    #[test]
    fn text_keys_short_secrets_and_reuse_are_refused() {
        let text_key = STANDARD.encode("an-ascii-passphrase-of-32-bytes!");
        assert!(validate(&config_with(&text_key, "", "")).is_err());
        let short = STANDARD.encode([7_u8, 200, 13, 99, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert!(validate(&config_with("", &short, "")).is_err());
        assert!(validate(&config_with("", &"s".repeat(40), "")).is_err());
        let key = Cipher::generate_base64_key();
        let error = validate(&config_with(&key, &key, "")).unwrap_err();
        assert!(error.message().contains("encryption key"), "{error}");
        assert!(validate(&config_with("", "", "short-token")).is_err());
        assert!(validate(&config_with("", "", &"a".repeat(40))).is_err());
    }

    #[test]
    fn missing_secrets_name_the_setting_and_files_fill_them() {
        let dir = std::env::temp_dir().join(format!("mb-secrets-{}", random_token(6)));
        let mut config = Config::default();
        config.security.secrets_dir = dir.display().to_string();
        let error = resolve(&mut config, Needs::all(), false).unwrap_err();
        assert!(
            error.message().contains("security.encryption_key"),
            "{error}"
        );

        let created = init_dir(&dir).unwrap();
        assert_eq!(created.len(), 4);
        assert!(
            init_dir(&dir).unwrap().is_empty(),
            "existing files are kept"
        );
        config.account.database_url = "postgres://marketbridge@db:5432/account".into();
        resolve(&mut config, Needs::all(), false).unwrap();
        let password = std::fs::read_to_string(dir.join(DATABASE_PASSWORD_FILE)).unwrap();
        assert_eq!(
            config.account.database_url,
            format!("postgres://marketbridge:{password}@db:5432/account")
        );
        assert_eq!(
            config.security.service_token,
            std::fs::read_to_string(dir.join(SERVICE_TOKEN_FILE)).unwrap()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
