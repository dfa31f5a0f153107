//! Item encodings, written straight into the reserved record and read straight from the map.
//!
//! bincode sizes the item first (one pass that only counts bytes), then encodes it into the
//! record in the map: no scratch buffer, no copy. Sizing costs a second walk over the item,
//! which for the small, flat items queues carry is cheaper than a copy and an allocation.
//!
//! Byte-like items (`Vec<u8>`, `String`, `Box<[u8]>`, `Box<str>`) skip serde: serde walks a
//! `Vec<u8>` element by element, while bincode writes it as a length then the raw bytes.
//! [`Bincode`] writes and reads exactly those bytes with one copy (see `bytes_fast`).

use std::any::Any;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encoding tag of raw bytes (the CLI's items).
pub const TAG_RAW: u32 = 0;
/// Encoding tag of bincode 2 (serde, standard configuration).
pub const TAG_BINCODE: u32 = 1;
/// Encoding tag of plain-old-data items (bytemuck).
pub const TAG_POD: u32 = 2;
/// Encoding tag of Python pickles (the Python package).
pub const TAG_PICKLE: u32 = 3;

/// A readable name for an encoding tag.
pub fn encoding_name(tag: u32) -> String {
    match tag {
        TAG_RAW => "raw bytes".into(),
        TAG_BINCODE => "bincode (serde)".into(),
        TAG_POD => "plain old data (bytemuck)".into(),
        TAG_PICKLE => "Python pickle".into(),
        other => format!("unknown encoding {other}"),
    }
}

/// How items of type `T` become record payloads and back.
pub trait Codec<T>: Send + Sync + 'static {
    /// The tag stored in the file's header; a file is only opened with the codec that wrote it.
    const TAG: u32;
    /// Bytes `item` encodes to.
    fn encoded_len(item: &T) -> Result<usize, String>;
    /// Encodes `item` into exactly `buf` (of [`Codec::encoded_len`] bytes).
    fn encode_into(item: &T, buf: &mut [u8]) -> Result<(), String>;
    /// Decodes an item from its stored bytes.
    fn decode(bytes: &[u8]) -> Result<T, String>;
}

/// bincode 2 through serde: the default codec for any `Serialize + DeserializeOwned` type.
///
/// `Vec<u8>`, `String`, `Box<[u8]>` and `Box<str>` items take a one-copy path that writes the
/// same bytes serde would (a length, then the bytes), at about the speed of [`Raw`]. For byte
/// fields inside your own types, mark them `#[serde(with = "serde_bytes")]` (the
/// `serde_bytes` crate): bincode then writes the same length-then-bytes layout in one copy,
/// where a plain `Vec<u8>` field goes through serde one element at a time. The stored bytes
/// are the same either way, so adding the attribute later keeps old files readable.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl<T: Serialize + DeserializeOwned + 'static> Codec<T> for Bincode {
    const TAG: u32 = TAG_BINCODE;

    fn encoded_len(item: &T) -> Result<usize, String> {
        if let Some(bytes) = bytes_fast::as_bytes(item) {
            return Ok(bytes_fast::len_prefix_size(bytes.len()) + bytes.len());
        }
        let mut size = bincode::enc::write::SizeWriter::default();
        bincode::serde::encode_into_writer(item, &mut size, bincode_config())
            .map_err(|e| e.to_string())?;
        Ok(size.bytes_written)
    }

    fn encode_into(item: &T, buf: &mut [u8]) -> Result<(), String> {
        if let Some(bytes) = bytes_fast::as_bytes(item) {
            return bytes_fast::encode(bytes, buf);
        }
        let n = bincode::serde::encode_into_slice(item, buf, bincode_config())
            .map_err(|e| e.to_string())?;
        if n != buf.len() {
            return Err(format!("encoded {n} bytes, sized {}", buf.len()));
        }
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<T, String> {
        if let Some(item) = bytes_fast::decode::<T>(bytes) {
            return Ok(item);
        }
        let (item, n) = bincode::serde::decode_from_slice(bytes, bincode_config())
            .map_err(|e| e.to_string())?;
        if n != bytes.len() {
            return Err(format!("{} trailing bytes after the item", bytes.len() - n));
        }
        Ok(item)
    }
}

/// The byte-like fast path of [`Bincode`]: the same bytes bincode 2's standard configuration
/// writes through serde (a varint length, then the raw bytes), with one copy instead of a walk
/// per element. Structs holding bytes get the same from `#[serde(with = "serde_bytes")]`,
/// which bincode writes with the same layout in one copy.
mod bytes_fast {
    use super::Any;

    /// bincode's varint markers: a length up to 250 is one byte, longer ones follow a marker.
    const SINGLE_BYTE_MAX: usize = 250;
    const U16_BYTE: u8 = 251;
    const U32_BYTE: u8 = 252;
    const U64_BYTE: u8 = 253;

    /// The bytes of `item` when it is one of the byte-like types.
    pub(super) fn as_bytes<T: 'static>(item: &T) -> Option<&[u8]> {
        let any = item as &dyn Any;
        if let Some(v) = any.downcast_ref::<Vec<u8>>() {
            Some(v)
        } else if let Some(s) = any.downcast_ref::<String>() {
            Some(s.as_bytes())
        } else if let Some(b) = any.downcast_ref::<Box<[u8]>>() {
            Some(b)
        } else {
            any.downcast_ref::<Box<str>>().map(|s| s.as_bytes())
        }
    }

    pub(super) fn len_prefix_size(len: usize) -> usize {
        match len as u64 {
            n if n <= SINGLE_BYTE_MAX as u64 => 1,
            n if n <= u16::MAX as u64 => 3,
            n if n <= u32::MAX as u64 => 5,
            _ => 9,
        }
    }

    pub(super) fn encode(bytes: &[u8], buf: &mut [u8]) -> Result<(), String> {
        let len = bytes.len();
        let p = len_prefix_size(len);
        if buf.len() != p + len {
            return Err(format!(
                "sized {} bytes, the item needs {}",
                buf.len(),
                p + len
            ));
        }
        let (prefix, rest) = buf.split_at_mut(p);
        match p {
            1 => prefix[0] = len as u8,
            3 => {
                prefix[0] = U16_BYTE;
                prefix[1..].copy_from_slice(&(len as u16).to_le_bytes());
            }
            5 => {
                prefix[0] = U32_BYTE;
                prefix[1..].copy_from_slice(&(len as u32).to_le_bytes());
            }
            _ => {
                prefix[0] = U64_BYTE;
                prefix[1..].copy_from_slice(&(len as u64).to_le_bytes());
            }
        }
        rest.copy_from_slice(bytes);
        Ok(())
    }

    /// The payload after a length prefix bincode would accept, when it spans exactly the
    /// rest of `stored`; `None` sends the caller down the serde path (and its error).
    fn payload(stored: &[u8]) -> Option<&[u8]> {
        let (&tag, rest) = stored.split_first()?;
        let (len, rest) = match tag {
            t if t as usize <= SINGLE_BYTE_MAX => (t as u64, rest),
            U16_BYTE => (
                u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as u64,
                &rest[2..],
            ),
            U32_BYTE => (
                u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as u64,
                &rest[4..],
            ),
            U64_BYTE => (
                u64::from_le_bytes(rest.get(..8)?.try_into().ok()?),
                &rest[8..],
            ),
            _ => return None,
        };
        (len == rest.len() as u64).then_some(rest)
    }

    /// Decodes a byte-like `T`; `None` when `T` is another type or the bytes need serde's
    /// verdict (a bad length, invalid UTF-8).
    pub(super) fn decode<T: 'static>(stored: &[u8]) -> Option<T> {
        let mut out: Option<T> = None;
        let slot = &mut out as &mut dyn Any;
        if let Some(o) = slot.downcast_mut::<Option<Vec<u8>>>() {
            *o = Some(payload(stored)?.to_vec());
        } else if let Some(o) = slot.downcast_mut::<Option<String>>() {
            *o = Some(std::str::from_utf8(payload(stored)?).ok()?.to_owned());
        } else if let Some(o) = slot.downcast_mut::<Option<Box<[u8]>>>() {
            *o = Some(payload(stored)?.into());
        } else if let Some(o) = slot.downcast_mut::<Option<Box<str>>>() {
            *o = Some(std::str::from_utf8(payload(stored)?).ok()?.into());
        }
        out
    }
}

/// Plain-old-data items, stored as their bytes: no serialization at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pod;

impl<T: bytemuck::Pod> Codec<T> for Pod {
    const TAG: u32 = TAG_POD;

    fn encoded_len(_: &T) -> Result<usize, String> {
        Ok(std::mem::size_of::<T>())
    }

    fn encode_into(item: &T, buf: &mut [u8]) -> Result<(), String> {
        buf.copy_from_slice(bytemuck::bytes_of(item));
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<T, String> {
        if bytes.len() != std::mem::size_of::<T>() {
            return Err(format!(
                "{} bytes stored, the type is {} bytes",
                bytes.len(),
                std::mem::size_of::<T>()
            ));
        }
        Ok(bytemuck::pod_read_unaligned(bytes))
    }
}

/// Raw byte items (`Vec<u8>`), stored as they are: what `ringq push` and `ringq pop` use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Codec<Vec<u8>> for Raw {
    const TAG: u32 = TAG_RAW;

    fn encoded_len(item: &Vec<u8>) -> Result<usize, String> {
        Ok(item.len())
    }

    fn encode_into(item: &Vec<u8>, buf: &mut [u8]) -> Result<(), String> {
        buf.copy_from_slice(item);
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Job {
        id: u64,
        name: String,
    }

    #[test]
    fn bincode_sizes_then_encodes_exactly() {
        let job = Job {
            id: 7,
            name: "seven".into(),
        };
        let n = <Bincode as Codec<Job>>::encoded_len(&job).unwrap();
        let mut buf = vec![0u8; n];
        <Bincode as Codec<Job>>::encode_into(&job, &mut buf).unwrap();
        assert_eq!(<Bincode as Codec<Job>>::decode(&buf).unwrap(), job);
        assert!(<Bincode as Codec<Job>>::decode(&buf[..n - 1]).is_err());
    }

    /// What bincode's serde path writes and reads, to compare the fast path with.
    fn serde_encode<T: Serialize>(item: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(item, bincode_config()).unwrap()
    }
    fn serde_decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
        match bincode::serde::decode_from_slice::<T, _>(bytes, bincode_config()) {
            Ok((t, n)) if n == bytes.len() => Ok(t),
            Ok(_) => Err("trailing".into()),
            Err(e) => Err(e.to_string()),
        }
    }
    fn fast<T: Serialize + DeserializeOwned + 'static>(item: &T) -> Vec<u8> {
        let n = <Bincode as Codec<T>>::encoded_len(item).unwrap();
        let mut buf = vec![0xEE; n];
        <Bincode as Codec<T>>::encode_into(item, &mut buf).unwrap();
        buf
    }

    const EDGE_LENS: [usize; 11] = [
        0,
        1,
        250,
        251,
        252,
        4096,
        65_535,
        65_536,
        65_537,
        100_000,
        1 << 20,
    ];

    #[test]
    fn byte_like_fast_path_writes_exactly_the_serde_bytes() {
        for len in EDGE_LENS {
            let v: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            assert!(bytes_fast::as_bytes(&v).is_some());
            let wire = serde_encode(&v);
            assert_eq!(fast(&v), wire, "Vec<u8> of {len}");
            assert_eq!(
                fast(&v.clone().into_boxed_slice()),
                wire,
                "Box<[u8]> of {len}"
            );
            assert_eq!(fast(&serde_bytes_like(&v)), wire, "serde_bytes of {len}");
            assert_eq!(<Bincode as Codec<Vec<u8>>>::decode(&wire).unwrap(), v);
            assert_eq!(
                <Bincode as Codec<Box<[u8]>>>::decode(&wire).unwrap(),
                v.clone().into_boxed_slice()
            );
            let s: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let wire = serde_encode(&s);
            assert_eq!(fast(&s), wire, "String of {len}");
            assert_eq!(fast(&s.clone().into_boxed_str()), wire, "Box<str> of {len}");
            assert_eq!(<Bincode as Codec<String>>::decode(&wire).unwrap(), s);
        }
        let multibyte = "żółw 🐢".repeat(40);
        assert_eq!(fast(&multibyte), serde_encode(&multibyte));
    }

    /// A `serde_bytes`-style field: serialized with `serialize_bytes`.
    fn serde_bytes_like(v: &[u8]) -> SerBytes {
        SerBytes(v.to_vec())
    }
    struct SerBytes(Vec<u8>);
    impl Serialize for SerBytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
    impl<'de> serde::Deserialize<'de> for SerBytes {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Vec::<u8>::deserialize(d).map(SerBytes)
        }
    }

    #[test]
    fn byte_like_fast_path_decodes_like_serde_on_any_input() {
        // Every length prefix form, canonical or not, wrong lengths, bad UTF-8, markers
        // bincode rejects: the fast path agrees with serde on the value or on failing.
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![1],
            vec![2, b'a'],
            vec![1, b'a', b'b'],
            vec![251, 1, 0, b'x'],
            vec![251, 1],
            vec![252, 2, 0, 0, 0, b'x', b'y'],
            vec![253, 1, 0, 0, 0, 0, 0, 0, 0, b'z'],
            vec![254, 0],
            vec![255],
            vec![2, 0xff, 0xfe],
            vec![3, 0xe2, 0x82, 0xac],
        ];
        let mut rng = 0x1234_5678_u64;
        for _ in 0..2000 {
            let len = (rng % 12) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if rng.is_multiple_of(3) {
                        (rng >> 8) as u8 % 8
                    } else {
                        (rng >> 16) as u8
                    }
                })
                .collect();
            inputs.push(v);
        }
        for input in &inputs {
            let fast_v = <Bincode as Codec<Vec<u8>>>::decode(input);
            let slow_v = serde_decode::<Vec<u8>>(input);
            assert_eq!(fast_v.is_ok(), slow_v.is_ok(), "Vec<u8> {input:?}");
            if let (Ok(a), Ok(b)) = (&fast_v, &slow_v) {
                assert_eq!(a, b, "{input:?}");
            }
            let fast_s = <Bincode as Codec<String>>::decode(input);
            let slow_s = serde_decode::<String>(input);
            assert_eq!(fast_s.is_ok(), slow_s.is_ok(), "String {input:?}");
            if let (Ok(a), Ok(b)) = (&fast_s, &slow_s) {
                assert_eq!(a, b, "{input:?}");
            }
        }
    }

    #[test]
    fn pod_rejects_wrong_length() {
        assert!(<Pod as Codec<u64>>::decode(&[1, 2, 3]).is_err());
        assert_eq!(<Pod as Codec<u64>>::decode(&7u64.to_ne_bytes()).unwrap(), 7);
    }
}
