use super::*;

#[test]
fn slot_round_trips_and_rejects_any_flip() {
    let slot = Slot {
        magic: SLOT_MAGIC,
        version: FORMAT_VERSION,
        epoch: 0xDEAD_BEEF,
        generation: 7,
        capacity: 8192,
        head_off: 16,
        head_seq: 3,
        tail_off: 128,
        next_seq: 9,
        seq_limit: 100,
        ..Slot::default()
    };
    let bytes = slot.encode();
    let back = Slot::decode(&bytes).unwrap();
    assert_eq!(back.check(&bytes), Ok(()));
    assert_eq!(Slot { crc: 0, ..back }, Slot { crc: 0, ..slot });
    for i in 0..SLOT_SIZE {
        let mut damaged = bytes;
        damaged[i] ^= 1;
        let s = Slot::decode(&damaged).unwrap();
        assert!(s.check(&damaged).is_err(), "flip at {i} accepted");
    }
}

#[test]
fn zeros_never_decode_as_a_record_or_cursor() {
    let ring = vec![0u8; 256];
    for off in (0..256).step_by(8) {
        assert!(read_frame(&ring, off, Some(0)).is_err());
        assert!(read_frame(&ring, off, None).is_err());
    }
    assert!(Cursor::decode(&[0u8; 32], 0).is_none());
}

#[test]
fn a_record_checks_epoch_seq_length_and_payload() {
    let mut ring = vec![0u8; 128];
    let payload = b"hello world";
    let size = record_size(payload.len()).unwrap();
    assert_eq!(size, 24 + 16);
    ring[24..24 + payload.len()].copy_from_slice(payload);
    write_header(&mut ring[..size], KIND_DATA, 42, payload.len() as u32, 7);
    let f = read_frame(&ring, 0, Some(7)).unwrap();
    assert_eq!((f.kind, f.seq, f.len, f.size), (KIND_DATA, 42, 11, 40));
    assert_eq!(f.payload(&ring, 0), payload);
    assert_eq!(read_frame(&ring, 0, Some(8)), Err(FrameProblem::Epoch));
    for i in 0..24 + payload.len() {
        let mut d = ring.clone();
        d[i] ^= 0x10;
        assert!(read_frame(&d, 0, Some(7)).is_err(), "flip at {i} accepted");
    }
    // A done mark keeps the record valid, and can be undone.
    let mut d = ring.clone();
    assert!(set_done(&mut d, 0, 7, true));
    assert_eq!(read_frame(&d, 0, Some(7)).unwrap().kind, KIND_DONE);
    assert!(set_done(&mut d, 0, 7, false));
    assert_eq!(d, ring);
    // A length past the end of the ring.
    assert_eq!(
        read_frame(&ring[..39], 0, Some(7)),
        Err(FrameProblem::Length)
    );
    assert_eq!(read_frame(&ring, 120, Some(7)), Err(FrameProblem::NoRoom));
}

#[test]
fn cursor_cells_check_their_epoch() {
    let c = Cursor {
        head_seq: 5,
        head_off: 64,
    };
    let cell = c.encode(99);
    assert_eq!(Cursor::decode(&cell, 99), Some(c));
    assert_eq!(Cursor::decode(&cell, 98), None);
}

#[test]
fn record_size_overflow_is_none() {
    assert_eq!(record_size(usize::MAX), None);
    assert_eq!(record_size(usize::MAX - 30), None);
    assert_eq!(record_size(0), Some(24));
    assert_eq!(record_size(1), Some(32));
}
