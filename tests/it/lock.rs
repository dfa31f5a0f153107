//! The exclusive lock: a second open fails at once, in this process and from another.

use std::process::Command;

use ringq::{Error, RingFile, RingOptions};

#[test]
fn a_second_open_in_the_same_process_fails_at_once_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.q");
    let first = RingFile::open(&path, &RingOptions::default()).unwrap();
    let err = RingFile::open(&path, &RingOptions::default()).unwrap_err();
    match &err {
        Error::Locked { path: p } => assert_eq!(p, &path),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(err.to_string().contains("locked.q"), "{err}");
    drop(first);
    // Other tests in this binary spawn processes: a child between fork and exec briefly holds
    // a copy of every descriptor (close-on-exec closes it). Allow that moment, nothing more.
    let mut reopened = None;
    for _ in 0..100 {
        match RingFile::open(&path, &RingOptions::default()) {
            Ok(r) => {
                reopened = Some(r);
                break;
            }
            Err(Error::Locked { .. }) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        reopened.is_some(),
        "dropping the owner did not release the lock"
    );
}

#[test]
fn a_second_open_from_another_process_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.q");
    let _held = RingFile::open(&path, &RingOptions::default()).unwrap();
    // flock(1) from util-linux tries the same lock from a child process.
    let status = Command::new("flock")
        .args(["--nonblock", "--exclusive"])
        .arg(&path)
        .arg("true")
        .status();
    match status {
        Ok(s) => assert!(!s.success(), "another process took the lock we hold"),
        Err(e) => panic!("cannot run flock(1): {e}"),
    }
}

#[test]
fn the_lock_is_released_when_the_process_dies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.q");
    RingFile::open(&path, &RingOptions::default()).unwrap();
    // A child process takes the lock, then is killed with SIGKILL.
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.flock(f, fcntl.LOCK_EX); time.sleep(30)",
        ])
        .arg(&path)
        .spawn()
        .unwrap();
    let mut locked = false;
    for _ in 0..100 {
        match RingFile::open(&path, &RingOptions::default()) {
            Err(Error::Locked { .. }) => {
                locked = true;
                break;
            }
            Ok(r) => drop(r),
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(locked, "the child's lock was never seen");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut opened = false;
    for _ in 0..200 {
        if RingFile::open(&path, &RingOptions::default()).is_ok() {
            opened = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(opened, "the lock outlived the killed process");
}
