//! The `flare-local` command line: what `--help` documents, what `token` refuses,
//! `serve --addr` with a host name, a busy port, and logs without colour codes in a pipe.

use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flare-local"));
    c.env_remove("RUST_LOG").env("RUST_BACKTRACE", "0");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn help_documents_every_option_and_environment_variable() {
    for args in [&["--help"][..], &["serve", "--help"], &["token", "--help"]] {
        let out = bin().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for var in [
            "FLARE_LOCAL_JWT_SECRET",
            "FLARE_DEFAULT_SENDER",
            "FLARE_ALLOW_PRIVATE_ENDPOINTS",
            "FLARE_SMTP_EXTRA_CA",
            "RUST_LOG",
        ] {
            assert!(text.contains(var), "{args:?} names {var}: {text}");
        }
    }
    let serve = bin().args(["serve", "--help"]).output().unwrap();
    let serve = String::from_utf8_lossy(&serve.stdout);
    assert!(
        serve.contains("--addr") && serve.contains("localhost:8081"),
        "{serve}"
    );
    assert!(serve.contains("--data-dir"), "{serve}");
}

#[test]
fn token_refuses_a_role_flare_does_not_know() {
    let out = bin()
        .args(["token", "--org", "acme", "--roles", "admin,boss"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("boss") && err.contains("admin, dispatcher, responder"),
        "{err}"
    );
    let ok = bin()
        .args(["token", "--org", "acme", "--roles", "dispatcher,responder"])
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert_eq!(String::from_utf8_lossy(&ok.stdout).matches('.').count(), 2);
}

#[test]
fn serve_takes_a_host_name_says_when_the_port_is_busy_and_logs_plain_text_to_a_pipe() {
    let dir = std::env::temp_dir().join(format!("flare-cli-{}", uuid::Uuid::new_v4()));
    let port = free_port();
    let addr = format!("localhost:{port}");
    let mut first = bin()
        .args(["serve", "--addr", &addr, "--data-dir"])
        .arg(dir.join("a"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Up when it answers HTTP (a 401: no token). A TCP connect alone is not enough: the
    // port is bound before the runner has opened its data and logged that it serves.
    let answers = || -> bool {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
        if c.write_all(b"GET /v1/settings HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        c.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
    };
    let mut up = false;
    for _ in 0..100 {
        if answers() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(up, "serve --addr {addr} listens");
    // Never waits on a second server that did start: killed after 20 s, and failed.
    let mut second = bin()
        .args(["serve", "--addr", &addr, "--data-dir"])
        .arg(dir.join("b"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut exited = None;
    for _ in 0..400 {
        if let Some(status) = second.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if exited.is_none() {
        let _ = second.kill();
        let _ = first.kill();
    }
    let second = second.wait_with_output().unwrap();
    assert!(
        exited.is_some_and(|s| !s.success()),
        "a second serve on {addr} exits with an error"
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!("{addr} is already in use")) && err.contains("--addr"),
        "{err}"
    );
    let _ = first.kill();
    let out = first.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("flare-local serving"), "{log}");
    assert!(!log.contains('\x1b'), "no colour codes in a pipe: {log:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
