//! Attack: run a deployment with secrets that anyone who read this repository knows, and forge
//! admin tokens or webhooks with them. `serve` and `work` must refuse to start, naming the
//! variable and never echoing the value.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_evisa");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A deployment's shape with everything fresh and random except what a test overrides; the
/// gate runs before any connection, so no service needs to answer.
fn deploy(subcommand: &str, overrides: &[(&str, String)]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg(subcommand)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Nothing listens here: a process that got past the gate fails to connect instead.
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env("EVISA_PUBLIC_BASE_URL", "https://pay.example.gov/")
        .env("EVISA_JWT_SECRET", random())
        .env("EVISA_RECEIPT_KEY", random())
        .env("EVISA_DATA_KEYS", format!("k1:{}", random()))
        .env("STRIPE_SECRET_KEY", format!("sk_live_{}", alnum()))
        .env("STRIPE_WEBHOOK_SECRETS", format!("whsec_{}", alnum()));
    for (k, v) in overrides {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn random() -> String {
    let out = Command::new(BIN)
        .args(["keys", "generate", "--id", "x"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim()[2..].to_string()
}

fn alnum() -> String {
    random().replace(['+', '/', '='], "")
}

fn assert_refused(subcommand: &str, var: &str, value: &str, stderr: &str) {
    assert!(
        stderr.contains(&format!("{var}: ")),
        "`{subcommand}` did not name {var} for a published value: {stderr}"
    );
    assert!(
        !stderr.contains(value.trim()),
        "`{subcommand}` echoed the secret: {stderr}"
    );
}

#[test]
fn fresh_secrets_pass_the_gate() {
    for sub in ["serve", "work"] {
        let (ok, stderr) = deploy(sub, &[]);
        assert!(!ok);
        assert!(
            !stderr.contains("invalid configuration"),
            "fresh secrets were refused: {stderr}"
        );
        assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    }
}

/// The placeholders of `compose.yaml` and `.env.example`, the dev defaults and the sandbox's own
/// credentials: each one alone is refused by `serve` and by `work`.
#[test]
fn every_published_secret_stops_serve_and_work() {
    let mut cases = published_values();
    cases.extend(
        [
            ("STRIPE_WEBHOOK_SECRETS", "whsec_evisa_dev_sandbox"),
            ("STRIPE_SECRET_KEY", "sk_test_evisa_sandbox"),
            ("ALIPAY_APP_ID", "2021000000000001"),
            (
                "EVISA_DATA_KEYS",
                "dev:ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=",
            ),
            (
                "EVISA_RECEIPT_KEY",
                "evisa-dev-receipt-key-not-for-production",
            ),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    assert!(cases.len() >= 12, "the scan found too little: {cases:?}");
    for (var, value) in &cases {
        for sub in ["serve", "work"] {
            let mut overrides = vec![(var.as_str(), value.clone())];
            if var.starts_with("ALIPAY_") {
                // Alipay is all or nothing; the others are fresh and only `var` is published.
                for (k, v) in [
                    ("ALIPAY_APP_ID", "2088123456789012".to_string()),
                    (
                        "ALIPAY_GATEWAY_URL",
                        "https://openapi.alipay.com/gateway.do".into(),
                    ),
                    ("ALIPAY_SELLER_ID", "2088123456789012".into()),
                ] {
                    if k != var {
                        overrides.push((k, v));
                    }
                }
                for (k, file) in [
                    ("ALIPAY_APP_PRIVATE_KEY", "merchant_dev_private.pem"),
                    ("ALIPAY_PUBLIC_KEY", "alipay_sandbox_public.pem"),
                ] {
                    if k != var {
                        // A key only this test knows is not at hand (ring cannot make RSA
                        // keys); a published one makes its own variable fail too, which the
                        // assertion below tolerates by checking `var` alone.
                        overrides.push((k, read(&format!("sandbox/keys/{file}"))));
                    }
                }
            }
            let (ok, stderr) = deploy(sub, &overrides);
            assert!(!ok, "`{sub}` started with a published {var}");
            assert_refused(sub, var, value, &stderr);
        }
    }
}

#[test]
fn guessable_secrets_stop_serve() {
    for (var, value) in [
        (
            "EVISA_JWT_SECRET",
            "abababababababababababababababababababab",
        ),
        ("EVISA_RECEIPT_KEY", "abcdefabcdefabcdefabcdefabcdefab"),
        ("STRIPE_WEBHOOK_SECRETS", "whsec_12345678"),
    ] {
        let (ok, stderr) = deploy("serve", &[(var, value.to_string())]);
        assert!(!ok);
        assert_refused("serve", var, value, &stderr);
        assert!(stderr.contains("entropy"), "{stderr}");
    }
}

#[test]
fn dev_keeps_its_published_defaults() {
    // `dev` refuses nothing published; it stops here only because nothing listens on port 1.
    let out = Command::new(BIN)
        .arg("dev")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("STRIPE_WEBHOOK_SECRETS", "whsec_evisa_dev_sandbox")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("invalid configuration"), "{stderr}");
    assert!(stderr.contains("cannot reach Postgres"), "{stderr}");
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap()
}

/// Every secret-shaped value in every tracked file: webhook secrets, Stripe keys, data-key
/// entries, values given to the token and receipt keys, and the sandbox's key files.
fn published_values() -> Vec<(String, String)> {
    let files = Command::new("git")
        .args(["ls-files"])
        .current_dir(ROOT)
        .output()
        .expect("git lists the repository's files");
    let mut found: Vec<(String, String)> = Vec::new();
    let mut add = |var: &str, value: &str| {
        let pair = (var.to_string(), value.to_string());
        if !found.contains(&pair) {
            found.push(pair);
        }
    };
    for path in String::from_utf8(files.stdout).unwrap().lines() {
        let Ok(text) = std::fs::read_to_string(format!("{ROOT}/{path}")) else {
            continue;
        };
        if path.starts_with("sandbox/keys/") && path.ends_with(".pem") {
            let var = if path.contains("private") {
                "ALIPAY_APP_PRIVATE_KEY"
            } else {
                "ALIPAY_PUBLIC_KEY"
            };
            add(var, &text);
            continue;
        }
        let is_token = |c: char| c.is_ascii_alphanumeric() || "_+/=:-".contains(c);
        for token in text.split(|c: char| !is_token(c)) {
            let token = token.trim_end_matches([':', '-']);
            if token.starts_with("whsec_") && token.len() > 8 {
                add("STRIPE_WEBHOOK_SECRETS", token);
            } else if (token.starts_with("sk_test_") || token.starts_with("sk_live_"))
                && token.len() > 10
            {
                add("STRIPE_SECRET_KEY", token);
            } else if let Some((id, key)) = token.split_once(':')
                && !id.is_empty()
                && id.len() <= 16
                && id.bytes().all(|b| b.is_ascii_alphanumeric())
                && key.len() == 44
                && key.ends_with('=')
            {
                add("EVISA_DATA_KEYS", token);
            }
        }
        for line in text.lines() {
            for var in ["EVISA_JWT_SECRET", "EVISA_RECEIPT_KEY"] {
                let Some(rest) = line.trim_start().strip_prefix(var) else {
                    continue;
                };
                let Some(value) = rest.strip_prefix(['=', ':']) else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                if value.len() >= 8 && !value.starts_with('$') {
                    add(var, value);
                }
            }
        }
    }
    found
}
