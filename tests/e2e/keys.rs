//! Data at rest: `evisa keys rotate` re-seals every personal field under a new key while the
//! service runs, in batches, resumably; afterwards the old key can be dropped and everything
//! still opens.

use std::process::Command;

use evisa_core::{application::store, crypto::DataKeys, ids::ApplicationId};

use crate::common::{complete_fields, spawn_app};

const BIN: &str = env!("CARGO_BIN_EXE_evisa");

fn rotate(url: &str, keys: &str) -> String {
    let out = Command::new(BIN)
        .args(["keys", "rotate", "--batch", "3"])
        .env("DATABASE_URL", url)
        .env("EVISA_DATA_KEYS", keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn rotation_reseals_every_value_under_the_new_key_and_the_old_one_can_go() {
    let app = spawn_app().await;
    let old = app
        .env
        .iter()
        .find(|(k, _)| k == "EVISA_DATA_KEYS")
        .unwrap()
        .1
        .clone();
    let token = app.applicant().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            app.draft(&token, &complete_fields("FR", "tourist", "standard"))
                .await,
        );
    }
    // One draft with a single personal field: the others stay empty.
    ids.push(
        app.draft(&token, &serde_json::json!({"full_name": "Only Aname"}))
            .await,
    );

    let new = DataKeys::generate_entry("k2");
    let ring = format!("{new},{old}");
    let first = rotate(app.database_url(), &ring);
    assert!(
        first.contains("re-sealed 16 values from key test to k2"),
        "{first}"
    );
    assert!(first.contains("6 applications re-sealed"), "{first}");
    assert!(first.contains("key k2: 16 values"), "{first}");
    assert!(first.contains("the other keys can be dropped"), "{first}");

    // Resumable and idempotent: a second run finds nothing left.
    let again = rotate(app.database_url(), &ring);
    assert!(again.contains("0 applications re-sealed"), "{again}");

    // With the old key gone, every field still opens.
    let only_new = DataKeys::parse(&new).unwrap();
    for id in &ids {
        let id: ApplicationId = id.parse().unwrap();
        let a = store::get(&app.db, &only_new, id).await.unwrap();
        assert!(a.full_name.is_some());
    }
    let under_old: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM applications, LATERAL (VALUES (full_name), (passport_number), (date_of_birth)) f(v)
          WHERE v IS NOT NULL AND substring(v FROM 2 FOR get_byte(v, 0)) <> 'k2'::bytea",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(under_old, 0);
}
