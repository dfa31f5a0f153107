//! Item encodings, written straight into the reserved record and read straight from the map.
//!
//! bincode sizes the item first (one pass that only counts bytes), then encodes it into the
//! record in the map: no scratch buffer, no copy. Sizing costs a second walk over the item,
//! which for the small, flat items queues carry is cheaper than a copy and an allocation.

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
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl<T: Serialize + DeserializeOwned> Codec<T> for Bincode {
    const TAG: u32 = TAG_BINCODE;

    fn encoded_len(item: &T) -> Result<usize, String> {
        let mut size = bincode::enc::write::SizeWriter::default();
        bincode::serde::encode_into_writer(item, &mut size, bincode_config())
            .map_err(|e| e.to_string())?;
        Ok(size.bytes_written)
    }

    fn encode_into(item: &T, buf: &mut [u8]) -> Result<(), String> {
        let n = bincode::serde::encode_into_slice(item, buf, bincode_config())
            .map_err(|e| e.to_string())?;
        if n != buf.len() {
            return Err(format!("encoded {n} bytes, sized {}", buf.len()));
        }
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<T, String> {
        let (item, n) = bincode::serde::decode_from_slice(bytes, bincode_config())
            .map_err(|e| e.to_string())?;
        if n != bytes.len() {
            return Err(format!("{} trailing bytes after the item", bytes.len() - n));
        }
        Ok(item)
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

    #[test]
    fn pod_rejects_wrong_length() {
        assert!(<Pod as Codec<u64>>::decode(&[1, 2, 3]).is_err());
        assert_eq!(<Pod as Codec<u64>>::decode(&7u64.to_ne_bytes()).unwrap(), 7);
    }
}
