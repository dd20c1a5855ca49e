use super::*;

fn vars(err: ConfigError) -> Vec<&'static str> {
    err.0.into_iter().map(|p| p.var).collect()
}

#[test]
fn dev_needs_nothing() {
    let c = Config::load(Profile::Dev, &Source::from_pairs([])).unwrap();
    assert_eq!(
        c.database_url.expose(),
        "postgres://postgres@127.0.0.1:5432/evisa"
    );
    assert_eq!(c.public_base_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(c.log_format, LogFormat::Text);
}

#[test]
fn production_names_every_missing_variable() {
    let err = Config::load(Profile::Production, &Source::from_pairs([])).unwrap_err();
    assert_eq!(
        vars(err),
        [
            "DATABASE_URL",
            "REDIS_URL",
            "EVISA_PUBLIC_BASE_URL",
            "EVISA_JWT_SECRET",
            "EVISA_DATA_KEYS",
            "EVISA_RECEIPT_KEY",
            "STRIPE_SECRET_KEY",
            "STRIPE_WEBHOOK_SECRETS"
        ]
    );
}

#[test]
fn malformed_values_are_named() {
    let src = Source::from_pairs([
        ("DATABASE_URL", "mysql://x"),
        ("EVISA_HTTP_ADDR", "localhost"),
        ("EVISA_JWT_SECRET", "short"),
        ("EVISA_DATA_KEYS", "k1:AAAA"),
        ("STRIPE_SECRET_KEY", "pk_test_123"),
        ("STRIPE_WEBHOOK_SECRETS", "whsec_a, nope"),
        ("ALIPAY_GATEWAY_URL", "not a url"),
    ]);
    let err = Config::load(Profile::Dev, &src).unwrap_err();
    let text = err.to_string();
    assert_eq!(
        vars(err),
        [
            "DATABASE_URL",
            "EVISA_HTTP_ADDR",
            "EVISA_JWT_SECRET",
            "EVISA_DATA_KEYS",
            "STRIPE_SECRET_KEY",
            "STRIPE_WEBHOOK_SECRETS",
            "ALIPAY_GATEWAY_URL"
        ]
    );
    assert!(!text.contains("short"), "secrets are not echoed: {text}");
}

#[test]
fn secrets_do_not_show_in_debug() {
    let src = Source::from_pairs([
        (
            "EVISA_JWT_SECRET",
            "0123456789abcdef0123456789abcdef-secret",
        ),
        ("STRIPE_SECRET_KEY", "sk_test_supersecret"),
        ("DATABASE_URL", "postgres://u:hunter2@db/evisa"),
    ]);
    let c = Config::load(Profile::Dev, &src).unwrap();
    let debug = format!("{c:?}");
    for secret in ["0123456789abcdef", "supersecret", "hunter2"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
}

#[test]
fn env_file_lines() {
    let parsed = parse_env_file("# c\nA=1\n B = \"two\" \n\n").unwrap();
    assert_eq!(
        parsed,
        [("A".into(), "1".into()), ("B".into(), "two".into())]
    );
    assert!(parse_env_file("nope").is_err());
}
