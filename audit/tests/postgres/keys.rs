//! API keys: only digests stored; the gateway role can create and revoke.

use crate::support::*;
use warden_audit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_authenticate_until_revoked_and_secrets_are_never_stored() {
    let db = TestDb::new().await;
    let gateway = db.pool_as_member_of("warden_gateway").await;
    let tenant = TenantId::new("tenant-a").unwrap();
    let admin = create_api_key(&gateway, &tenant, true, Some("ops"))
        .await
        .unwrap();
    let user = create_api_key(&gateway, &tenant, false, None)
        .await
        .unwrap();
    assert!(admin.secret.starts_with("wdn_") && admin.secret.len() == 4 + 64);
    assert_ne!(admin.secret, user.secret);

    let found = authenticate(&gateway, &admin.secret)
        .await
        .unwrap()
        .expect("valid key");
    assert_eq!(
        (found.key_id.clone(), found.tenant.clone(), found.admin),
        (admin.key_id.clone(), tenant.clone(), true)
    );
    assert!(authenticate(&gateway, "wdn_wrong").await.unwrap().is_none());

    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys WHERE row_to_json(api_keys)::text LIKE '%' || $1 || '%' \
         OR row_to_json(api_keys)::text LIKE '%' || $2 || '%'",
    )
    .bind(&admin.secret[4..])
    .bind(&user.secret[4..])
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);

    assert!(revoke_api_key(&gateway, &user.key_id).await.unwrap());
    assert!(
        !revoke_api_key(&gateway, &user.key_id).await.unwrap(),
        "already revoked"
    );
    assert!(authenticate(&gateway, &user.secret)
        .await
        .unwrap()
        .is_none());
    let keys = list_api_keys(&gateway, &tenant).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys
        .iter()
        .any(|k| k.key_id == user.key_id && k.revoked_at.is_some()));
    assert!(list_api_keys(&gateway, &TenantId::new("tenant-b").unwrap())
        .await
        .unwrap()
        .is_empty());
    // The gateway may only set revoked_at, never rewrite a key.
    let err = sqlx::query("UPDATE api_keys SET admin = true")
        .execute(&gateway)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}
