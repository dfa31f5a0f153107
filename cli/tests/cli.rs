//! The `ringq` binary, driven for real in a temporary directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use assert_cmd::Command;
use ringq::{RingFile, RingOptions};

fn ringq() -> Command {
    Command::cargo_bin("ringq").expect("the ringq binary is built")
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `ringq ARGS` and asserts it succeeded; returns stdout.
fn ok(args: &[&str], path: &Path) -> String {
    let out = ringq().args(args).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "ringq {args:?} failed: {}",
        stderr_of(&out)
    );
    stdout_of(&out)
}

fn push_lines(path: &Path, input: &str) -> std::process::Output {
    let out = ringq()
        .arg("push")
        .arg(path)
        .write_stdin(input)
        .output()
        .unwrap();
    assert!(out.status.success(), "push failed: {}", stderr_of(&out));
    out
}

/// The items left in the file, read without removing them.
///
/// Retries a lock held for a moment: a child another test forks while this process has the
/// file open holds the lock until it execs (the descriptor is close-on-exec).
fn remaining(path: &Path) -> Vec<Vec<u8>> {
    let options = RingOptions::default().create(false);
    for _ in 0..250 {
        match RingFile::open(path, &options) {
            Ok(ring) => return ring.records().map(|r| r.payload.to_vec()).collect(),
            Err(ringq::Error::Locked { .. }) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("cannot open {}: {e}", path.display()),
        }
    }
    panic!("{} stayed locked", path.display());
}

#[test]
fn push_lines_then_pop_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("lines.q");
    let out = push_lines(&q, "alpha\nbravo\n\ncharlie");
    assert!(
        stderr_of(&out).contains("added 4 items"),
        "{}",
        stderr_of(&out)
    );
    push_lines(&q, "delta\n");
    assert_eq!(ok(&["pop"], &q), "alpha\nbravo\n\ncharlie\ndelta\n");
    assert_eq!(ok(&["pop"], &q), "", "the queue is empty after a full pop");
}

#[test]
fn push_nul_separated_and_arguments_with_json_counts() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("nul.q");
    let out = ringq()
        .args(["push", "-0", "--json"])
        .arg(&q)
        .write_stdin(&b"x\0two\nlines\0"[..])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({ "added": 2 }));
    let out = ringq()
        .args(["push", "--json"])
        .arg(&q)
        .args(["--", "one", "two words", "-n"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["added"], 3);
    let out = ringq().args(["pop", "-0"]).arg(&q).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"x\0two\nlines\0one\0two words\0-n\0");
}

#[test]
fn pop_n_takes_that_many_and_peek_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("n.q");
    push_lines(&q, "i0\ni1\ni2\ni3\ni4\n");
    assert_eq!(ok(&["pop", "-n", "2"], &q), "i0\ni1\n");
    assert_eq!(ok(&["peek"], &q), "i2\ni3\ni4\n");
    assert_eq!(ok(&["peek", "-n", "1"], &q), "i2\n");
    assert_eq!(ok(&["peek"], &q), "i2\ni3\ni4\n", "peek removed something");

    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json"], &q)).unwrap();
    assert_eq!(v["items"], 3);
    assert_eq!(v["oldest_seq"], 2);
    assert_eq!(v["newest_seq"], 4);
    assert_eq!(v["next_seq"], 5);
    assert_eq!(v["encoding"], ringq::codec::TAG_RAW);
    assert_eq!(v["sound"], true);
    assert!(v["capacity"].as_u64().unwrap() >= v["bytes_used"].as_u64().unwrap());
    assert!(v["bytes_used"].as_u64().unwrap() > 0);
    assert_eq!(v["slots"].as_array().unwrap().len(), 2);

    let text = ok(&["inspect"], &q);
    assert!(text.contains("items        3"), "{text}");
    assert!(text.contains("raw bytes"), "{text}");
    assert!(text.contains("nothing to do"), "{text}");
    assert_eq!(
        remaining(&q),
        [b"i2".to_vec(), b"i3".to_vec(), b"i4".to_vec()]
    );
}

#[test]
fn peek_works_while_another_process_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("held.q");
    push_lines(&q, "kept\n");
    let _held = RingFile::open(&q, &RingOptions::default()).unwrap();
    assert_eq!(ok(&["peek"], &q), "kept\n");
    ok(&["inspect"], &q);
}

#[test]
fn verify_finds_a_flipped_byte_and_repair_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("damaged.q");
    push_lines(&q, "alpha\nbravo\ncharlie\n");
    assert!(ok(&["verify"], &q).contains("sound, 3 items verified"));

    let mut bytes = std::fs::read(&q).unwrap();
    let at = bytes.windows(5).position(|w| w == b"bravo").unwrap();
    assert!(at >= 8192, "records start after the two header pages");
    bytes[at + 2] ^= 0x20;
    std::fs::write(&q, &bytes).unwrap();

    let out = ringq().arg("verify").arg(&q).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stdout_of(&out));
    assert!(stdout_of(&out).contains("DAMAGED"), "{}", stdout_of(&out));
    let out = ringq().args(["verify", "--json"]).arg(&q).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sound"], false);
    assert_eq!(v["recovery"]["records_dropped"], 1);
    assert_eq!(std::fs::read(&q).unwrap(), bytes, "verify changed the file");

    let out = ringq().args(["repair", "--json"]).arg(&q).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kept"], 2);
    assert_eq!(v["dropped"], 1);
    let backup = Path::new(v["backup"].as_str().unwrap());
    assert_eq!(backup.parent(), Some(dir.path()));
    let name = backup.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("damaged.q.") && name.ends_with(".bak"),
        "{name}"
    );
    assert_eq!(
        std::fs::read(backup).unwrap(),
        bytes,
        "the backup is the damaged original"
    );

    assert!(ok(&["verify"], &q).contains("sound, 2 items verified"));
    let out = ringq().arg("repair").arg(&q).output().unwrap();
    assert!(out.status.success());
    assert!(stdout_of(&out).contains("nothing to repair"));
    assert_eq!(ok(&["pop"], &q), "alpha\ncharlie\n");
    let backups = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".bak")
        })
        .count();
    assert_eq!(backups, 1, "a sound file is not backed up again");
}

/// Built without the `kafka` feature, a kafka:// URL says how to get it, and creates nothing.
#[cfg(all(feature = "nats", not(feature = "kafka")))]
#[test]
fn relay_to_kafka_without_the_feature_says_how_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let out = ringq()
        .arg("relay")
        .arg(&path)
        .args(["--to", "kafka://127.0.0.1:9092", "--topic", "jobs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains("built without Kafka support") && err.contains("--features kafka"),
        "{err}"
    );
    assert!(!path.exists());
}

#[test]
fn a_missing_file_fails_clearly_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("absent.q");
    for cmd in ["pop", "peek", "inspect", "verify", "repair"] {
        let out = ringq().arg(cmd).arg(&q).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = stderr_of(&out);
        assert!(err.starts_with("ringq: "), "{cmd}: {err}");
        assert!(
            err.contains("absent.q") && err.contains("No such file"),
            "{cmd}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{cmd}: {err}");
        assert!(!q.exists(), "{cmd} created the file");
    }
}

#[test]
fn a_directory_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["push", "pop", "peek", "inspect", "verify", "repair"] {
        let out = ringq()
            .arg(cmd)
            .arg(dir.path())
            .write_stdin("x\n")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(
            stderr_of(&out).contains("directory"),
            "{cmd}: {}",
            stderr_of(&out)
        );
    }
}

#[test]
fn a_file_that_is_not_a_queue_fails_clearly_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("random.bin");
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..50_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&q, &bytes).unwrap();
    for cmd in ["push", "pop", "peek", "inspect", "verify", "repair"] {
        let out = ringq()
            .arg(cmd)
            .arg(&q)
            .write_stdin("x\n")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = stderr_of(&out);
        assert!(
            err.starts_with("ringq: ") && err.contains("not a ringq"),
            "{cmd}: {err}"
        );
        assert_eq!(std::fs::read(&q).unwrap(), bytes, "{cmd} changed the file");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no backup or temp file left"
    );
}

#[test]
fn a_locked_file_fails_at_once_with_locked() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("locked.q");
    push_lines(&q, "stay\n");
    let held = RingFile::open(&q, &RingOptions::default()).unwrap();
    for args in [
        &["pop"][..],
        &["repair", "--force"][..],
        &["push", "--wait", "0"][..],
    ] {
        let out = ringq()
            .args(args)
            .arg(&q)
            .write_stdin("more\n")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr_of(&out).contains("locked"),
            "{args:?}: {}",
            stderr_of(&out)
        );
    }
    drop(held);
    assert_eq!(remaining(&q), [b"stay".to_vec()]);
}

#[test]
fn push_refuses_a_typed_queue_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("typed.q");
    let options = RingOptions::default().encoding(Some(ringq::codec::TAG_BINCODE));
    RingFile::open(&q, &options).unwrap().close().unwrap();
    let out = ringq()
        .args(["push"])
        .arg(&q)
        .args(["--", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("--any-encoding"),
        "{}",
        stderr_of(&out)
    );
    let out = ringq()
        .args(["push", "--any-encoding"])
        .arg(&q)
        .args(["--", "x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", "--json"], &q)).unwrap();
    assert_eq!(
        v["encoding"],
        ringq::codec::TAG_BINCODE,
        "the file keeps its encoding"
    );
}

#[test]
fn a_closed_stdout_is_success_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("pipe.q");
    push_lines(&q, "p1\np2\np3\n");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = StdCommand::new(assert_cmd::cargo::cargo_bin("ringq"))
        .arg("pop")
        .arg(&q)
        .stdout(Stdio::from(writer))
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        remaining(&q).len(),
        3,
        "an item was popped that could not be printed"
    );
}

#[test]
fn pop_follow_prints_new_items_and_loses_none_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("follow.q");
    push_lines(&q, "a0\na1\na2\n");
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("ringq"))
        .args(["pop", "--follow", "--interval", "20"])
        .arg(&q)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // While paused, the reader stops reading: the pipe fills and `pop` blocks mid-drain.
    let paused = Arc::new(AtomicBool::new(false));
    let pause = Arc::clone(&paused);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            while pause.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut printed = Vec::new();
    let expect = |n: usize, printed: &mut Vec<String>| {
        for _ in 0..n {
            printed.push(
                rx.recv_timeout(Duration::from_secs(20))
                    .expect("pop --follow printed nothing"),
            );
        }
    };
    expect(3, &mut printed);
    assert_eq!(printed, ["a0", "a1", "a2"]);

    // A producer gets the lock between polls (push waits up to 2 s for it).
    push_lines(&q, "b0\nb1\n");
    expect(2, &mut printed);
    assert_eq!(printed[3..], ["b0", "b1"]);

    // Interrupt in the middle of a large drain: with the reader paused, `pop` fills the
    // pipe and blocks in a write while it holds the file's lock.
    paused.store(true, Ordering::SeqCst);
    let many: String = (0..50_000).map(|i| format!("c{i}\n")).collect();
    push_lines(&q, &many);
    // Blocked in a write, it holds the lock for as long as the reader is paused: wait until
    // the lock has been held for half a second in a row (opening and recovery are shorter).
    let mut locked_since = None;
    for _ in 0..1000 {
        match RingFile::open(&q, &RingOptions::default().create(false)) {
            Err(ringq::Error::Locked { .. }) => {
                let since = *locked_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
            }
            Ok(ring) => {
                drop(ring);
                locked_since = None;
            }
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        locked_since.is_some_and(|t| t.elapsed() > Duration::from_millis(500)),
        "pop --follow never blocked mid-drain"
    );
    let kill = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    std::thread::sleep(Duration::from_millis(50));
    paused.store(false, Ordering::SeqCst);
    let mut status = None;
    for _ in 0..500 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(status) = status else {
        child.kill().unwrap();
        panic!("pop --follow did not stop within 10 s of SIGINT");
    };
    assert!(
        status.success(),
        "pop --follow did not stop cleanly on SIGINT: {status}"
    );
    reader.join().unwrap();
    printed.extend(rx.try_iter());

    let left: Vec<String> = remaining(&q)
        .into_iter()
        .map(|p| String::from_utf8(p).unwrap())
        .collect();
    let all: Vec<String> = ["a0", "a1", "a2", "b0", "b1"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..50_000).map(|i| format!("c{i}")))
        .collect();
    let mut seen = printed.clone();
    seen.extend(left.iter().cloned());
    assert_eq!(
        seen.len(),
        all.len(),
        "printed {} + left {}",
        printed.len(),
        left.len()
    );
    assert_eq!(seen, all, "items were lost, duplicated or reordered");
    assert!(
        printed.len() > 5 && !left.is_empty(),
        "the interrupt was meant to land mid-drain: printed {}, left {}",
        printed.len(),
        left.len()
    );
}

#[test]
fn both_header_slots_lost_pop_refuses_and_repair_rebuilds_from_records() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("headless.q");
    push_lines(&q, "one\ntwo\nthree\n");
    let mut bytes = std::fs::read(&q).unwrap();
    bytes[..8192].fill(0); // both header pages
    std::fs::write(&q, &bytes).unwrap();

    let out = ringq().arg("pop").arg(&q).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("ringq repair"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(
        std::fs::read(&q).unwrap(),
        bytes,
        "pop changed a headless file"
    );

    let out = ringq().args(["verify", "--json"]).arg(&q).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recovery"]["rebuilt"], true);

    let out = ringq().args(["repair", "--json"]).arg(&q).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kept"], 3);
    assert_eq!(std::fs::read(v["backup"].as_str().unwrap()).unwrap(), bytes);
    assert_eq!(
        ok(&["verify"], &q).trim_end(),
        format!("{}: sound, 3 items verified", q.display())
    );
    assert_eq!(ok(&["pop"], &q), "one\ntwo\nthree\n");
}
