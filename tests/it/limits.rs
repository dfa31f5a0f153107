//! Size limits over their whole range: every payload up to `max_payload()` fits an empty
//! ring, and "no limit" values (`u64::MAX`) neither panic nor cap the ring at nothing.

use ringq::{Error, MemStorage, Queue, RingFile, RingOptions};

fn mem(opts: &RingOptions) -> RingFile<MemStorage> {
    RingFile::create_in(MemStorage::new(), opts).unwrap()
}

/// Pushes `max_payload()` bytes into the empty ring, pops it back, and returns the ring.
fn largest_fits(mut r: RingFile<MemStorage>) -> RingFile<MemStorage> {
    let max = r.max_payload() as usize;
    let item = vec![0x5a; max];
    r.push(&item)
        .unwrap_or_else(|e| panic!("max_payload {max} into an empty ring: {e}"));
    assert_eq!(r.pop().unwrap().as_deref(), Some(&item[..]));
    r
}

#[test]
fn max_payload_fits_when_growing_to_the_limit() {
    let opts = RingOptions::default()
        .initial_capacity(4096)
        .max_capacity(Some(8192));
    let r = mem(&opts);
    assert_eq!(r.max_payload(), 8168);
    let r = largest_fits(r);
    assert_eq!(r.capacity(), 8192);
    // And again with the tail no longer at the front of the (now full-size) ring.
    largest_fits(r);
}

#[test]
fn max_payload_fits_when_the_tail_is_not_at_the_front() {
    for (init, max) in [(4096, 8192), (4096, 4096), (4096, 12_288), (8192, 65_536)] {
        let opts = RingOptions::default()
            .initial_capacity(init)
            .max_capacity(Some(max));
        let mut r = mem(&opts);
        r.push(&[1; 100]).unwrap();
        assert_eq!(r.pop().unwrap().as_deref(), Some(&[1u8; 100][..]));
        let r = largest_fits(r);
        assert_eq!(r.capacity(), max, "init {init} max {max}");
    }
}

#[test]
fn every_payload_up_to_the_limit_fits_an_empty_ring() {
    let max = 8192u64;
    for len in (0..=8168usize).step_by(97).chain([8160, 8161, 8167, 8168]) {
        let opts = RingOptions::default()
            .initial_capacity(4096)
            .max_capacity(Some(max));
        let mut r = mem(&opts);
        r.push(&[3; 40]).unwrap();
        r.pop().unwrap();
        r.push(&vec![7; len])
            .unwrap_or_else(|e| panic!("len {len}: {e}"));
        assert_eq!(r.pop().unwrap().map(|v| v.len()), Some(len));
    }
}

#[test]
fn huge_max_capacity_means_no_practical_limit() {
    for max in [
        u64::MAX,
        u64::MAX - 1,
        u64::MAX - 7,
        1 << 63,
        usize::MAX as u64,
    ] {
        let opts = RingOptions::default()
            .initial_capacity(4096)
            .max_capacity(Some(max));
        let mut r = mem(&opts);
        assert_eq!(r.max_payload(), u32::MAX as u64, "max {max}");
        for i in 0..40u8 {
            r.push(&[i; 1000]).unwrap();
        }
        assert!(r.capacity() > 4096);
        for i in 0..40u8 {
            assert_eq!(r.pop().unwrap(), Some(vec![i; 1000]));
        }
    }
}

#[test]
fn huge_initial_capacity_is_a_clear_error() {
    for init in [u64::MAX, u64::MAX - 7, 1 << 62] {
        let opts = RingOptions::default().initial_capacity(init);
        match RingFile::create_in(MemStorage::new(), &opts) {
            Err(Error::Io { .. }) => {}
            Err(e) => panic!("init {init}: unexpected error {e}"),
            Ok(_) => panic!("init {init}: allocated"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.ring");
    let opts = RingOptions::default().initial_capacity(u64::MAX);
    let err = RingFile::open(&path, &opts).unwrap_err();
    assert!(err.to_string().contains("cannot allocate"), "{err}");
}

#[tokio::test]
async fn queue_max_bytes_without_practical_limit() {
    let dir = tempfile::tempdir().unwrap();
    let q: Queue<Vec<u8>> = Queue::builder(dir.path().join("q"))
        .initial_capacity(4096)
        .max_bytes(u64::MAX)
        .open()
        .await
        .unwrap();
    for i in 0..20u8 {
        q.put_nowait(vec![i; 1000]).unwrap();
    }
    for i in 0..20u8 {
        assert_eq!(q.get_nowait().unwrap(), vec![i; 1000]);
    }
    let err = Queue::<Vec<u8>>::builder(dir.path().join("big"))
        .initial_capacity(u64::MAX)
        .open()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot allocate"), "{err}");
}

#[tokio::test]
async fn queue_put_of_max_payload_into_a_ring_that_must_grow() {
    let dir = tempfile::tempdir().unwrap();
    let q: Queue<Vec<u8>, ringq::Raw> = Queue::<Vec<u8>>::builder(dir.path().join("q"))
        .codec::<ringq::Raw>()
        .initial_capacity(4096)
        .max_bytes(8192)
        .open()
        .await
        .unwrap();
    let item = vec![9u8; 8168];
    tokio::time::timeout(std::time::Duration::from_secs(10), q.put(item.clone()))
        .await
        .expect("put of max_payload never finished")
        .unwrap();
    assert_eq!(q.get_nowait().unwrap(), item);
}
