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

/// An urgent write goes ahead of the others waiting: sent after 5,000 normal writes
/// while the writer is held, it is the first committed (FIFO would make it the 5,001st).
#[tokio::test(flavor = "current_thread")]
async fn an_urgent_write_goes_ahead_of_the_normal_ones_waiting() {
    type Write = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;
    let dir = std::env::temp_dir().join(format!("flare-sqlite-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = std::sync::Arc::new(Db::open(&dir.join("flare.db")).unwrap());
    db.write(|c| Ok(c.execute_batch("CREATE TABLE seen (who TEXT)")?))
        .await
        .unwrap();
    let insert = |who: String| -> Write {
        let db = db.clone();
        Box::pin(async move {
            db.write_one(move |c| Ok(c.execute("INSERT INTO seen VALUES (?1)", [&who])?))
                .await
                .unwrap();
        })
    };
    // join_all polls each in order, and each sends its write when first polled: the
    // writer is held by the first until the last has run, so all are waiting by then.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let db2 = db.clone();
    let mut writes: Vec<Write> = vec![Box::pin(async move {
        db2.write_one(move |_| Ok(held.recv()?)).await.unwrap();
    })];
    writes.extend((0..5000).map(|i| insert(format!("normal-{i}"))));
    writes.push(Box::pin(crate::urgent(insert("urgent".into()))));
    writes.push(Box::pin(async move { release.send(()).unwrap() }));
    futures::future::join_all(writes).await;
    let first: String = db
        .read(|c| {
            Ok(
                c.query_row("SELECT who FROM seen ORDER BY rowid LIMIT 1", [], |r| {
                    r.get(0)
                })?,
            )
        })
        .unwrap();
    assert_eq!(first, "urgent");
    let count: i64 = db
        .read(|c| Ok(c.query_row("SELECT count(*) FROM seen", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(count, 5001);
    std::fs::remove_dir_all(dir).unwrap();
}
