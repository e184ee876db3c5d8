//! `--store postgres://…` against the real PostgreSQL of every development and
//! CI machine (127.0.0.1:5432, trust auth, database `test`): the query store
//! in PostgreSQL survives a SIGKILL and scores exactly as an uninterrupted
//! offline run, its rows are really in PostgreSQL, and a store derived from
//! another log is refused at start.

use crate::service_e2e::sigkill_scenario;
use crate::support::bin;
use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs `f` on a thread of its own: the blocking PostgreSQL client refuses to
/// run on a thread that drives async tasks (the test's runtime).
fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

/// A schema of its own on the test server, dropped at the end.
struct Schema(String);

impl Schema {
    fn fresh() -> Schema {
        let name = format!("agentdrift_e2e_{:016x}", rand::random::<u64>());
        let sql = format!("CREATE SCHEMA {name}");
        off_runtime(move || connect(PG).batch_execute(&sql).unwrap());
        Schema(name)
    }

    /// The store URL that keeps agentdrift's tables in this schema.
    fn url(&self) -> String {
        format!("{PG}?options=-csearch_path%3D{}", self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA {} CASCADE", self.0);
        off_runtime(move || {
            if let Ok(mut c) = postgres::Client::connect(PG, postgres::NoTls) {
                let _ = c.batch_execute(&sql);
            }
        });
    }
}

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not answering at {PG} ({e}). Start it (`service postgresql start`, or \
             `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16`)"
        )
    })
}

/// Ids of the events stored in PostgreSQL, and its closed-session count.
fn in_postgres(url: String) -> (BTreeSet<String>, i64) {
    off_runtime(move || {
        let mut c = connect(&url);
        let events = c
            .query("SELECT id FROM events", &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let sessions: i64 = c.query_one("SELECT count(*) FROM sessions", &[]).unwrap().get(0);
        (events, sessions)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_survives_sigkill_scores_as_one_run_and_refuses_another_log() {
    let schema = Schema::fresh();
    let url = schema.url();
    let after = sigkill_scenario(&[("AGENTDRIFT_STORE", &url)]).await;
    // The events and closed sessions are PostgreSQL's rows, not the embedded file's.
    let (events, sessions) = in_postgres(url.clone());
    assert_eq!(
        events, after.events,
        "PostgreSQL holds exactly the events the API lists"
    );
    assert_eq!(
        sessions as usize, after.sessions,
        "every closed session is a row in PostgreSQL"
    );
    let local = rusqlite::Connection::open(after.dir.path().join("data/agentdrift.sqlite3")).unwrap();
    let local_events: i64 = local
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(local_events, 0, "nothing derived is kept in the embedded file");
    // The same store with another (empty) log: its snapshot covers positions this log
    // does not have, so the service refuses to start instead of mixing two histories.
    let other = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--baseline"])
        .arg(&after.baseline)
        .arg("--data-dir")
        .arg(other.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--otlp-grpc-listen", "off", "--store", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("serve with another log's store should refuse to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "refused: {err}");
    assert!(err.contains("another log"), "says why: {err}");
}

#[test]
fn a_bad_store_url_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = crate::support::repo().join("baselines/taubench-gpt-4o-airline.adb");
    for (url, says) in [
        ("mysql://localhost/x", "--store must be a postgres:// URL"),
        ("postgres://nobody:hunter2@127.0.0.1:1/none", "127.0.0.1:1"),
    ] {
        let out = Command::new(bin())
            .args(["serve", "--baseline"])
            .arg(&baseline)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--otlp-grpc-listen", "off", "--store", url])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url} refused");
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("hunter2"), "the password is never printed: {err}");
    }
}
