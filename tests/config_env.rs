//! Settings: defaults < file < environment, secrets from files, errors that
//! name the key, and secrets that never print. A binary of its own: these
//! tests set environment variables (figment's `Jail`), which every
//! subprocess started meanwhile would inherit, so they must not run beside
//! the tests in `tests/it/` that start `countersign`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::result_large_err)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use countersign::config::{LogFormat, Settings, SinkKind};
use figment::Jail;

fn load_err(file: Option<&str>) -> String {
    Settings::load(file.map(Path::new)).expect_err("the configuration should be refused").to_string()
}

#[test]
fn embedded_defaults_need_no_file_and_no_environment() {
    Jail::expect_with(|_| {
        let settings = Settings::load(None).unwrap();
        assert_eq!(settings.server.listen, "0.0.0.0:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(settings.store.url, "sqlite://data/countersign.db");
        assert_eq!(settings.documents.url, "file://data/documents");
        assert_eq!(settings.connect.max_body_bytes, 104_857_600);
        assert_eq!(settings.docusign.auth_server, "account-d.docusign.com");
        assert!(settings.admin.token.is_none(), "no token: the admin API is off");
        Ok(())
    });
}

#[test]
fn the_environment_overrides_the_file_which_overrides_the_defaults() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "countersign.toml",
            r#"
            [server]
            listen = "127.0.0.1:9000"
            shutdown_grace = "45s"

            [store]
            url = "sqlite://from-file.db"

            [queue]
            workers = 2
            backoff_cap = "10m"

            [[sinks]]
            name = "hr"
            kind = "webhook"
            url = "https://hr.example.com/hooks"
            secret = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
            "#,
        )?;
        jail.set_env("COUNTERSIGN_STORE__URL", "postgres://countersign@db/countersign");
        jail.set_env("COUNTERSIGN_CONNECT__HMAC_KEYS", r#"["k1","k2"]"#);
        jail.set_env("COUNTERSIGN_QUEUE__WORKERS", "8");
        jail.set_env("COUNTERSIGN_LOG__FORMAT", "human");

        let settings = Settings::load(Some(Path::new("countersign.toml"))).unwrap();
        assert_eq!(settings.store.url, "postgres://countersign@db/countersign", "environment beats file");
        assert_eq!(settings.queue.workers, 8, "environment beats file");
        assert_eq!(settings.server.listen, "127.0.0.1:9000".parse::<SocketAddr>().unwrap(), "file beats default");
        assert_eq!(settings.server.shutdown_grace, Duration::from_secs(45));
        assert_eq!(settings.queue.backoff_cap, Duration::from_secs(600));
        assert_eq!(settings.queue.lease, Duration::from_secs(60), "default kept where nobody set it");
        assert_eq!(settings.log.format, LogFormat::Human);
        let keys: Vec<_> = settings.connect.hmac_keys.iter().map(|k| k.expose().to_string()).collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert_eq!(settings.sinks[0].kind, SinkKind::Webhook);
        assert_eq!(
            settings.sinks[0].secret.as_ref().unwrap().expose(),
            "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
        );
        Ok(())
    });
}

#[test]
fn secrets_can_come_from_files() {
    Jail::expect_with(|jail| {
        jail.create_file("admin-token", "s3cr3t-admin-token\n")?;
        jail.create_file("hmac-keys", "first-key\n\nsecond-key\n")?;
        let pem = real_private_key();
        jail.create_file("key.pem", &pem)?;
        jail.create_file("sink-secret", "whsec_c2luaw==")?;
        jail.create_file(
            "countersign.toml",
            r#"
            [admin]
            token_file = "admin-token"
            [connect]
            hmac_keys_file = "hmac-keys"
            [docusign]
            private_key_file = "key.pem"
            [[sinks]]
            name = "identity"
            kind = "nats"
            url = "nats://127.0.0.1:4222"
            secret_file = "sink-secret"
            "#,
        )?;
        let settings = Settings::load(Some(Path::new("countersign.toml"))).unwrap();
        assert_eq!(settings.admin.token.unwrap().expose(), "s3cr3t-admin-token", "trailing newline dropped");
        let keys: Vec<_> = settings.connect.hmac_keys.iter().map(|k| k.expose().to_string()).collect();
        assert_eq!(keys, ["first-key", "second-key"]);
        assert_eq!(
            settings.docusign.private_key.unwrap().expose(),
            pem.trim_end(),
            "read whole, final newline dropped"
        );
        assert_eq!(settings.sinks[0].secret.as_ref().unwrap().expose(), "whsec_c2luaw==");
        Ok(())
    });
}

#[test]
fn a_secret_file_from_the_environment_works_like_one_from_the_file() {
    Jail::expect_with(|jail| {
        jail.create_file("token", "from-env-file")?;
        jail.set_env("COUNTERSIGN_ADMIN__TOKEN_FILE", "token");
        let settings = Settings::load(None).unwrap();
        assert_eq!(settings.admin.token.unwrap().expose(), "from-env-file");
        Ok(())
    });
}

#[test]
fn errors_name_the_key_that_is_wrong() {
    Jail::expect_with(|jail| {
        jail.create_file("typo.toml", "[server]\nlissten = \"127.0.0.1:1\"\n")?;
        let error = load_err(Some("typo.toml"));
        assert!(error.starts_with("configuration key `server.lissten` (in "), "{error}");
        assert!(error.contains("unknown key; expected one of"), "{error}");

        jail.create_file("bad-type.toml", "[queue]\nworkers = \"many\"\n")?;
        let error = load_err(Some("bad-type.toml"));
        assert!(error.contains("queue.workers"), "{error}");

        jail.create_file("zero.toml", "[queue]\nworkers = 0\n")?;
        assert_eq!(load_err(Some("zero.toml")), "configuration key `queue.workers`: must be at least 1");

        jail.create_file("scheme.toml", "[docusign]\nauth_server = \"https://account-d.docusign.com\"\n")?;
        assert!(
            load_err(Some("scheme.toml")).starts_with("configuration key `docusign.auth_server`: must be a bare host")
        );

        jail.create_file("store.toml", "[store]\nurl = \"mysql://db\"\n")?;
        assert!(load_err(Some("store.toml")).starts_with("configuration key `store.url`"));

        jail.create_file("both.toml", "[admin]\ntoken = \"a\"\ntoken_file = \"b\"\n")?;
        assert!(load_err(Some("both.toml")).contains("both `admin.token` and `admin.token_file` are set"));

        jail.create_file("missing.toml", "[admin]\ntoken_file = \"/nonexistent/token\"\n")?;
        let error = load_err(Some("missing.toml"));
        assert!(error.starts_with("configuration key `admin.token_file`: cannot read /nonexistent/token"), "{error}");

        jail.create_file("dup.toml", "[[sinks]]\nname=\"a\"\nkind=\"amqp\"\nurl=\"amqp://x\"\n[[sinks]]\nname=\"a\"\nkind=\"nats\"\nurl=\"nats://x\"\n")?;
        assert!(load_err(Some("dup.toml")).starts_with("configuration key `sinks[1].name`: `a` is used twice"));

        assert!(load_err(Some("absent.toml")).contains("absent.toml is not a readable file"));
        Ok(())
    });
}

#[test]
fn an_environment_error_names_the_key_too() {
    Jail::expect_with(|jail| {
        jail.set_env("COUNTERSIGN_SERVER__LISTEN", "not-an-address");
        let error = load_err(None);
        assert!(
            error.starts_with("configuration key `server.listen` (environment variable COUNTERSIGN_SERVER__LISTEN)"),
            "{error}"
        );

        jail.clear_env();
        jail.set_env("COUNTERSIGN_STORE__URLL", "sqlite://x.db");
        let error = load_err(None);
        assert!(
            error.starts_with(
                "configuration key `store.urll` (environment variable COUNTERSIGN_STORE__URLL): unknown key"
            ),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn secrets_never_appear_in_debug_output() {
    Jail::expect_with(|jail| {
        let pem = real_private_key();
        let pem_body_line = pem.lines().nth(2).unwrap().to_string();
        jail.create_file("key.pem", &pem)?;
        jail.create_file(
            "countersign.toml",
            r#"
            [connect]
            hmac_keys = ["HMAC-SECRET-ONE", "HMAC-SECRET-TWO"]
            [docusign]
            private_key_file = "key.pem"
            [admin]
            token = "ADMIN-SECRET"
            [[sinks]]
            name = "hr"
            kind = "webhook"
            url = "https://hr.example.com"
            secret = "whsec_U0lOSy1TRUNSRVQtU0lOSy1TRUNSRVQtMTIzNA=="
            token = "SINK-TOKEN-0123456789"
            [[sinks]]
            name = "erp"
            kind = "amqp"
            url = "amqp://guest:AMQP-PASSWORD@127.0.0.1:5672/%2f"
            [events]
            link_key = "LINK-KEY-0123456789"
            "#,
        )?;
        let settings = Settings::load(Some(Path::new("countersign.toml"))).unwrap();
        let printed = format!("{settings:?} {settings:#?}");
        let secrets = [
            "HMAC-SECRET-ONE",
            "HMAC-SECRET-TWO",
            &pem_body_line,
            "ADMIN-SECRET",
            "U0lOSy1TRUNSRVQ",
            "SINK-TOKEN",
            "AMQP-PASSWORD",
            "LINK-KEY",
        ];
        for secret in secrets {
            assert!(!printed.contains(secret), "{secret} leaked into Debug output");
        }
        assert!(printed.contains("[redacted]"));
        Ok(())
    });
}

#[test]
fn a_wrongly_typed_secret_is_not_repeated_in_the_error() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[connect]\nhmac_keys = \"TOPSECRET-KEY\"\n")?;
        let error = load_err(Some("c.toml"));
        assert!(error.starts_with("configuration key `connect.hmac_keys` (in "), "{error}");
        assert!(!error.contains("TOPSECRET"), "{error}");
        jail.create_file(
            "a.toml",
            "[[connect.accounts]]\naccount_id = \"f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b\"\nhmac_keys = [\"\"]\n",
        )?;
        assert!(load_err(Some("a.toml")).contains("connect.accounts[0].hmac_keys`: contains an empty key"));
        Ok(())
    });
}

#[test]
fn store_urls_are_logged_without_their_password() {
    use countersign::store::redact_url;
    assert_eq!(redact_url("postgres://cs:hunter2@db/cs"), "postgres://cs:redacted@db/cs");
    assert!(!redact_url("postgres://cs@db/cs?password=hunter2&sslmode=require").contains("hunter2"));
    assert!(!redact_url("postgres://cs:pa/ss#word@db/cs").contains("ss#word"));
}

#[test]
fn an_all_digit_secret_keeps_its_zeros_when_quoted_in_the_environment() {
    Jail::expect_with(|jail| {
        jail.set_env("COUNTERSIGN_ADMIN__TOKEN", "\"007\"");
        assert_eq!(Settings::load(None).unwrap().admin.token.unwrap().expose(), "007");
        Ok(())
    });
}

/// A freshly generated RSA private key in PKCS#8 PEM, as DocuSign hands it out.
fn real_private_key() -> String {
    countersign::sandbox::Identity::generate("https://www.docusign.com").unwrap().private_key_pem
}

#[test]
fn a_private_key_that_is_not_an_rsa_pem_is_refused_at_load() {
    Jail::expect_with(|jail| {
        jail.create_file("key.pem", "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")?;
        jail.create_file("countersign.toml", "[docusign]\nprivate_key_file = \"key.pem\"\n")?;
        let error = Settings::load(Some(Path::new("countersign.toml"))).unwrap_err();
        assert_eq!(error.key(), "docusign.private_key");
        assert!(error.to_string().contains("PKCS#1"), "{error}");
        assert!(!error.to_string().contains("MIIB"), "the key's bytes are not repeated: {error}");
        Ok(())
    });
}

#[test]
fn impersonation_settings_are_checked() {
    Jail::expect_with(|_| {
        let error =
            Settings::from_toml("[[docusign.accounts]]\naccount_id = \"not-a-guid\"\nuser_id = \"x\"\n").unwrap_err();
        assert_eq!(error.key(), "docusign.accounts[0].account_id");
        let error = Settings::from_toml("[docusign]\nallowed_users = [\"someone@example.com\"]\n").unwrap_err();
        assert_eq!(error.key(), "docusign.allowed_users[0]");
        let error = Settings::from_toml("[documents]\ndownload = \"everything\"\n").unwrap_err();
        assert_eq!(error.key(), "documents.download");
        Ok(())
    });
}

#[test]
fn an_s3_document_store_takes_its_credentials_from_files_and_never_prints_them() {
    Jail::expect_with(|jail| {
        jail.create_file("s3-key-id", "AKIA-KEY-ID-SECRET\n")?;
        jail.create_file("s3-secret", "S3-SECRET-ACCESS-KEY\n")?;
        jail.create_file(
            "countersign.toml",
            r#"
            [documents]
            url = "s3://signed-documents/countersign/prod"
            s3_endpoint = "http://minio.internal:9000"
            s3_allow_http = true
            s3_region = "eu-central-1"
            s3_path_style = false
            s3_access_key_id_file = "s3-key-id"
            staging_dir = "staging"
            "#,
        )?;
        jail.set_env("COUNTERSIGN_DOCUMENTS__S3_SECRET_ACCESS_KEY_FILE", "s3-secret");
        let settings = Settings::load(Some(Path::new("countersign.toml"))).unwrap();
        let documents = &settings.documents;
        assert_eq!(documents.s3_access_key_id.as_ref().unwrap().expose(), "AKIA-KEY-ID-SECRET");
        assert_eq!(documents.s3_secret_access_key.as_ref().unwrap().expose(), "S3-SECRET-ACCESS-KEY");
        assert_eq!(documents.s3_region.as_deref(), Some("eu-central-1"));
        assert!(documents.s3_allow_http && !documents.s3_path_style);
        // Opening sends nothing: the first upload or read reaches the bucket.
        let store = countersign::documents::DocumentStore::open(documents).unwrap();
        assert!(jail.directory().join("staging").is_dir(), "the staging directory is created");
        let printed = format!("{settings:?} {settings:#?} {store:?}");
        for secret in ["AKIA-KEY-ID-SECRET", "S3-SECRET-ACCESS-KEY"] {
            assert!(!printed.contains(secret), "{secret} leaked into Debug output");
        }
        assert!(printed.contains("s3://signed-documents/countersign/prod"), "{store:?}");
        Ok(())
    });
}

#[test]
fn document_store_settings_are_checked() {
    let cases = [
        ("url = \"s3://\"", "documents.url", "bucket"),
        ("url = \"s3://docs/a//b\"", "documents.url", "prefix"),
        ("url = \"gs://docs\"", "documents.url", "file:// or s3://"),
        ("url = \"s3://docs\"\ns3_endpoint = \"http://127.0.0.1:9000\"", "documents.s3_endpoint", "s3_allow_http"),
        ("url = \"s3://docs\"\ns3_endpoint = \"minio:9000\"", "documents.s3_endpoint", "https://"),
        ("url = \"s3://docs\"\ns3_access_key_id = \"id\"", "documents.s3_access_key_id", "go together"),
        ("url = \"s3://docs\"\ns3_region = \" \"", "documents.s3_region", "empty"),
        (
            "url = \"file://docs\"\ns3_endpoint = \"https://s3.example.com\"",
            "documents.s3_endpoint",
            "only to an s3://",
        ),
        ("url = \"file://docs\"\nstaging_dir = \"/tmp/x\"", "documents.staging_dir", "only to an s3://"),
        (
            "url = \"s3://docs\"\ns3_secret_access_key = \"x\"\ns3_secret_access_key_file = \"f\"",
            "documents.s3_secret_access_key",
            "give one",
        ),
    ];
    for (table, key, says) in cases {
        let error = Settings::from_toml(&format!("[documents]\n{table}\n")).unwrap_err();
        assert_eq!(error.key(), key, "{table}: {error}");
        assert!(error.to_string().contains(says), "{table}: {error}");
    }
}

#[test]
fn the_postgres_password_comes_from_a_file_and_never_prints() {
    Jail::expect_with(|jail| {
        // Characters that mean something in a URL must survive the trip into one.
        jail.create_file("postgres-password", "PG-S3CRET:/@?#%x\n")?;
        jail.set_env("COUNTERSIGN_STORE__URL", "postgres://countersign@db:5432/countersign?sslmode=prefer");
        jail.set_env("COUNTERSIGN_STORE__PASSWORD_FILE", "postgres-password");
        let settings = Settings::load(None).unwrap();
        assert_eq!(settings.store.password.as_ref().unwrap().expose(), "PG-S3CRET:/@?#%x", "trailing newline dropped");

        let connect = url::Url::parse(settings.store.connection_url().expose()).unwrap();
        assert_eq!((connect.username(), connect.host_str(), connect.port()), ("countersign", Some("db"), Some(5432)));
        let password = connect.password().unwrap();
        assert_eq!(
            url::form_urlencoded::parse(format!("p={password}").as_bytes()).next().unwrap().1,
            "PG-S3CRET:/@?#%x"
        );
        assert_eq!(connect.query(), Some("sslmode=prefer"));

        let printed = format!(
            "{settings:?} {settings:#?} {:?} {}",
            settings.store.connection_url(),
            settings.store.connection_url()
        );
        assert!(!printed.contains("PG-S3CRET"), "the password leaked into Debug output: {printed}");
        assert!(printed.contains("postgres://countersign@db:5432/countersign"), "the URL itself still prints");
        Ok(())
    });
}

#[test]
fn a_store_password_must_have_a_postgres_url_without_one() {
    let cases = [
        ("url = \"sqlite://data/cs.db\"\npassword = \"PW-ONE\"", "store.password", "only to a postgres://"),
        ("url = \"postgres://cs:PW-TWO@db/cs\"\npassword = \"PW-ONE\"", "store.password", "one place"),
        ("url = \"postgres://cs@db/cs?password=PW-TWO\"\npassword = \"PW-ONE\"", "store.password", "one place"),
        ("url = \"postgres://cs@db/cs\"\npassword = \"\"", "store.password", "empty"),
        ("url = \"postgres://cs@db/cs\"\npassword = \"PW-ONE\"\npassword_file = \"pw\"", "store.password", "give one"),
    ];
    for (table, key, says) in cases {
        let error = Settings::from_toml(&format!("[store]\n{table}\n")).unwrap_err();
        assert_eq!(error.key(), key, "{table}: {error}");
        assert!(error.to_string().contains(says), "{table}: {error}");
        assert!(!error.to_string().contains("PW-"), "a password is repeated in the error: {error}");
    }
    let error =
        Settings::from_toml("[store]\nurl = \"postgres://cs@db/cs\"\npassword_file = \"/no/such/file\"\n").unwrap_err();
    assert_eq!(error.key(), "store.password_file", "{error}");
}
