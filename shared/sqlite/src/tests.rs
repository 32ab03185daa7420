use super::*;

fn temp_db() -> (Sqlite, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("flare-sqlite-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    (Sqlite::open(&dir.join("flare.db")).unwrap(), dir)
}

fn user(id: &str) -> User {
    serde_json::from_value(serde_json::json!({
        "user_id": id, "name": "", "license": "basic_responder", "virtual": false}))
    .unwrap()
}

/// A hundred changes at once to one user: each lands (none is lost to another's write).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_to_a_user_all_land() {
    let (db, dir) = temp_db();
    let org = OrgId::parse("acme").unwrap();
    db.put_user(&org, &user("u-1")).await.unwrap();
    let id = UserId::parse("u-1").unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (db, org, id) = (db.clone(), org.clone(), id.clone());
            tokio::spawn(async move {
                db.update_user(&org, &id, &|u: &mut User| u.name.push('x'))
                    .await
                    .unwrap()
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let u = db.get_user(&org, &id).await.unwrap().unwrap();
    assert_eq!(u.name.len(), 100);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A write that fails leaves nothing behind and does not undo the others committed
/// with it; what was answered is on disk for the next open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_write_is_undone_alone_and_answered_writes_survive_a_reopen() {
    let (db, dir) = temp_db();
    let org = OrgId::parse("acme").unwrap();
    let writes: Vec<_> = (0..200)
        .map(|i| {
            let (db, org) = (db.clone(), org.clone());
            tokio::spawn(async move { db.put_user(&org, &user(&format!("u-{i}"))).await })
        })
        .collect();
    let failing = db.db.write(|c| -> anyhow::Result<()> {
        c.execute(
            "INSERT INTO users (org, id, body) VALUES ('acme', 'half', '{}')",
            [],
        )?;
        anyhow::bail!("fails after its first statement")
    });
    assert!(failing.await.is_err());
    for w in writes {
        w.await.unwrap().unwrap();
    }
    drop(db);
    let db = Sqlite::open(&dir.join("flare.db")).unwrap();
    assert_eq!(db.list_users(&org).await.unwrap().len(), 200);
    assert!(
        db.get_user(&org, &UserId::parse("half").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    std::fs::remove_dir_all(dir).unwrap();
}
