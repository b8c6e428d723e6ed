//! The frame codec, the one place that knows how messages become bytes.
//!
//! A frame is a 16-byte header, then `meta_len` bytes of bincode metadata, then `body_len`
//! bytes of raw little-endian 32-bit words:
//!
//! ```text
//! 0       4         6        8           12          16
//! | EMBT  | version | flags  | meta_len  | body_len  | meta ... | body ... |
//! ```
//!
//! The header is checked before anything else is read or allocated, so a peer cannot make a
//! process allocate more than the limits by lying about sizes. bincode is pinned to 2.0.1, its
//! final release; this module is the only user, so a change of codec touches nothing else.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{ErrorKind, PROTOCOL_VERSION, WireError, WireFormat};

pub const MAGIC: [u8; 4] = *b"EMBT";
pub const HEADER_LEN: usize = 16;

/// bincode's own guard on a decoded value's size, in case metadata claims a huge vector.
const BINCODE_LIMIT: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_variable_int_encoding().with_limit::<BINCODE_LIMIT>()
}

/// How large frames may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    pub max_meta: u32,
    pub max_body: u32,
}

impl Default for FrameLimits {
    /// Metadata carries plans and hot-row lists (a few MB at most); bodies carry batches and
    /// pooled vectors, up to a 2048 x 12 x 128 float response and more.
    fn default() -> Self {
        FrameLimits { max_meta: 32 << 20, max_body: 512 << 20 }
    }
}

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub meta_len: u32,
    pub body_len: u32,
}

/// Checks a header against the magic, the version and the limits.
pub fn parse_header(bytes: &[u8; HEADER_LEN], limits: &FrameLimits) -> Result<Header, WireError> {
    if bytes[..4] != MAGIC {
        return Err(WireError::new(ErrorKind::BadFrame, "not an embtune frame (bad magic)"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let meta_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    let body_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
    if version != PROTOCOL_VERSION {
        return Err(WireError::new(
            ErrorKind::WrongVersion,
            format!(
                "protocol version {version}, this node speaks {PROTOCOL_VERSION}: run the same embtune release everywhere"
            ),
        ));
    }
    if meta_len > limits.max_meta || body_len > limits.max_body {
        return Err(WireError::new(
            ErrorKind::Oversized,
            format!(
                "frame of {meta_len} B metadata and {body_len} B body exceeds the limits ({} B and {} B)",
                limits.max_meta, limits.max_body
            ),
        ));
    }
    if !body_len.is_multiple_of(4) {
        return Err(WireError::new(ErrorKind::BadFrame, format!("a body of {body_len} B is not whole 32-bit words")));
    }
    Ok(Header { version, meta_len, body_len })
}

/// Header and metadata of a frame; the body is written after it as it is.
pub fn encode_head<T: Serialize>(meta: &T, body_len: usize) -> Result<Vec<u8>, WireError> {
    let encoded = bincode::serde::encode_to_vec(meta, config())
        .map_err(|e| WireError::new(ErrorKind::Internal, format!("encoding a frame: {e}")))?;
    encode_head_raw(PROTOCOL_VERSION, &encoded, body_len)
}

/// A frame head around already-encoded metadata, with any version: tests build bad frames
/// with it.
pub fn encode_head_raw(version: u16, meta: &[u8], body_len: usize) -> Result<Vec<u8>, WireError> {
    let body_len = u32::try_from(body_len)
        .map_err(|_| WireError::new(ErrorKind::Oversized, format!("a body of {body_len} B does not fit a frame")))?;
    let mut out = Vec::with_capacity(HEADER_LEN + meta.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(meta);
    Ok(out)
}

/// Decodes metadata; trailing bytes are an error, as they mean the peer and we disagree.
pub fn decode_meta<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| WireError::new(ErrorKind::BadFrame, format!("malformed frame metadata: {e}")))?;
    if used != bytes.len() {
        return Err(WireError::new(
            ErrorKind::BadFrame,
            format!("{} stray bytes after the frame metadata", bytes.len() - used),
        ));
    }
    Ok(value)
}

/// Words as the little-endian bytes of a body.
pub fn words_as_bytes(words: &[u32]) -> &[u8] {
    le_only();
    bytemuck::cast_slice(words)
}

/// Floats as the little-endian bytes of a body.
pub fn floats_as_bytes(v: &[f32]) -> &[u8] {
    le_only();
    bytemuck::cast_slice(v)
}

/// A body's words as floats.
pub fn words_as_floats(words: &[u32]) -> &[f32] {
    bytemuck::cast_slice(words)
}

/// Pooled values as a reply body in `format`: f32 as they are, halves two to a word (value
/// `2i` in the low 16 bits of word `i`), each value rounded once to nearest-even.
pub fn encode_pooled(format: WireFormat, values: Vec<f32>) -> Vec<u32> {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    if format == WireFormat::F32 {
        // u32 and f32 have one size and alignment; reinterpret the buffer without a copy.
        return bytemuck::allocation::cast_vec(values);
    }
    // Converted a slice at a time (F16C where the CPU has it) into words, two halves each.
    let mut words = vec![0u32; format.words(values.len())];
    let bits: &mut [u16] = &mut bytemuck::cast_slice_mut::<u32, u16>(&mut words)[..values.len()];
    match format {
        WireFormat::Bf16 => bits.reinterpret_cast_mut::<half::bf16>().convert_from_f32_slice(&values),
        _ => bits.reinterpret_cast_mut::<half::f16>().convert_from_f32_slice(&values),
    }
    words
}

/// A half-precision reply body's values as bits, one `u16` each (`values` of them at most).
pub fn half_bits(words: &[u32], values: usize) -> &[u16] {
    le_only();
    let bits: &[u16] = bytemuck::cast_slice(words);
    &bits[..values.min(bits.len())]
}

/// Adds a reply body of `values` pooled values in `format` into `out` (`out[i] += value i`),
/// widening halves to f32 on the way: the client keeps its sums in f32.
pub fn add_pooled(format: WireFormat, words: &[u32], values: usize, out: &mut [f32]) -> Result<(), WireError> {
    if words.len() != format.words(values) || out.len() != values {
        return Err(WireError::new(
            ErrorKind::BadFrame,
            format!("a reply of {values} {format} values needs {} words; it has {}", format.words(values), words.len()),
        ));
    }
    match format {
        WireFormat::F32 => {
            for (o, &w) in out.iter_mut().zip(words) {
                *o += f32::from_bits(w);
            }
        }
        WireFormat::F16 | WireFormat::Bf16 => {
            let mut wide = vec![0f32; values];
            crate::route::decode_halves(format, half_bits(words, values), &mut wide);
            for (o, w) in out.iter_mut().zip(&wide) {
                *o += w;
            }
        }
    }
    Ok(())
}

/// A reply body of `values` pooled values in `format`, as f32.
pub fn decode_pooled(format: WireFormat, words: Vec<u32>, values: usize) -> Result<Vec<f32>, WireError> {
    if format == WireFormat::F32 && words.len() == values {
        return Ok(bytemuck::allocation::cast_vec(words));
    }
    let mut out = vec![0f32; values];
    add_pooled(format, &words, values, &mut out)?;
    Ok(out)
}

/// Bodies are little-endian words read and written in place; a big-endian port would swap here.
#[inline]
fn le_only() {
    const { assert!(cfg!(target_endian = "little"), "embtune's wire bodies assume a little-endian host") };
}

/// The frame decoder's fuzz target (`fuzz/fuzz_targets/frame.rs`, and replayed over the
/// checked-in corpus and random bytes by `protocol/tests/fuzz_frames.rs`): any bytes give a
/// header or a typed error, and metadata a request, a response or a typed error, never a panic
/// or an allocation past the limits; what decodes encodes to bytes that decode to the same.
#[doc(hidden)]
pub fn fuzz_frame(data: &[u8]) {
    use crate::wire::{Request, Response};
    let limits = FrameLimits { max_meta: 1 << 20, max_body: 1 << 20 };
    let Some(head) = data.first_chunk::<HEADER_LEN>() else { return };
    if let Ok(h) = parse_header(head, &limits) {
        assert!(h.meta_len <= limits.max_meta && h.body_len <= limits.max_body && h.body_len % 4 == 0);
        assert_eq!(h.version, PROTOCOL_VERSION);
    }
    // Metadata is decoded whatever the header said, as a reader does once the bytes are in.
    let meta = &data[HEADER_LEN..];
    if let Ok(req) = decode_meta::<Request>(meta) {
        fuzz_round_trip(&req);
    }
    if let Ok(resp) = decode_meta::<Response>(meta) {
        fuzz_round_trip(&resp);
    }
}

fn fuzz_round_trip<T: Serialize + DeserializeOwned>(v: &T) {
    let once = encode_head(v, 0).expect("a decoded message encodes");
    let back: T = decode_meta(&once[HEADER_LEN..]).expect("an encoded message decodes");
    assert_eq!(once, encode_head(&back, 0).unwrap(), "a message changed on a round trip");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{LookupHead, Request, Response};

    fn head(bytes: &[u8]) -> [u8; HEADER_LEN] {
        bytes[..HEADER_LEN].try_into().unwrap()
    }

    #[test]
    fn frames_round_trip() {
        let req = Request::Lookup(LookupHead {
            plan_id: 7,
            batch_size: 2,
            tables: vec![0, 3],
            offsets: 5,
            ids: 9,
            reply: WireFormat::Bf16,
            client: 3,
        });
        let bytes = encode_head(&req, 56).unwrap();
        let h = parse_header(&head(&bytes), &FrameLimits::default()).unwrap();
        assert_eq!(h.body_len, 56);
        assert_eq!(h.meta_len as usize, bytes.len() - HEADER_LEN);
        let back: Request = decode_meta(&bytes[HEADER_LEN..]).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn bad_headers_get_typed_errors() {
        let ok = encode_head(&Response::Ack, 0).unwrap();
        let mut bad_magic = ok.clone();
        bad_magic[0] = b'X';
        assert_eq!(parse_header(&head(&bad_magic), &FrameLimits::default()).unwrap_err().kind, ErrorKind::BadFrame);
        let other = encode_head_raw(PROTOCOL_VERSION + 1, &[0], 0).unwrap();
        assert_eq!(parse_header(&head(&other), &FrameLimits::default()).unwrap_err().kind, ErrorKind::WrongVersion);
        let big = encode_head_raw(PROTOCOL_VERSION, &[0], 1 << 30).unwrap();
        assert_eq!(parse_header(&head(&big), &FrameLimits::default()).unwrap_err().kind, ErrorKind::Oversized);
        let ragged = encode_head_raw(PROTOCOL_VERSION, &[0], 6).unwrap();
        assert_eq!(parse_header(&head(&ragged), &FrameLimits::default()).unwrap_err().kind, ErrorKind::BadFrame);
    }

    #[test]
    fn malformed_and_truncated_metadata_is_rejected() {
        let bytes = encode_head(&Request::WorkerStats, 0).unwrap();
        let meta = &bytes[HEADER_LEN..];
        assert!(decode_meta::<Request>(&[0xff, 0xff, 0xff]).is_err());
        let mut extra = meta.to_vec();
        extra.push(0);
        assert_eq!(decode_meta::<Request>(&extra).unwrap_err().kind, ErrorKind::BadFrame);
        let req = Request::Lookup(LookupHead {
            plan_id: 1,
            batch_size: 1,
            tables: vec![1, 2, 3],
            offsets: 1,
            ids: 1,
            reply: WireFormat::F32,
            client: 0,
        });
        let full = encode_head(&req, 0).unwrap();
        let cut = &full[HEADER_LEN..full.len() - 2];
        assert_eq!(decode_meta::<Request>(cut).unwrap_err().kind, ErrorKind::BadFrame);
    }

    #[test]
    fn a_lying_vector_length_does_not_allocate() {
        // A varint length of about 2^62 elements: bincode's limit refuses it before allocating.
        let mut meta = vec![1u8]; // Request::Lookup
        meta.extend([0, 0]); // plan_id, batch_size
        meta.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x00]);
        assert_eq!(decode_meta::<Request>(&meta).unwrap_err().kind, ErrorKind::BadFrame);
    }

    #[test]
    fn pooled_values_round_once_to_the_wire_format_and_add_back_in_f32() {
        let values: Vec<f32> = (0..7).map(|i| (i as f32 - 3.0) * 1.37e-2 + 1e3 * (i % 2) as f32).collect();
        for format in WireFormat::ALL {
            let words = encode_pooled(format, values.clone());
            assert_eq!(words.len(), format.words(values.len()));
            let mut sum = vec![1.0f32; values.len()];
            add_pooled(format, &words, values.len(), &mut sum).unwrap();
            for (i, (&v, &s)) in values.iter().zip(&sum).enumerate() {
                let err = ((s - 1.0) - v).abs() as f64;
                assert!(err <= v.abs() as f64 * format.unit_roundoff() + 1e-6, "{format} value {i}: {v} came back {s}");
            }
            if format != WireFormat::F32 {
                assert_ne!(sum[1] - 1.0, values[1], "{format} must round");
            }
            assert_eq!(decode_pooled(format, words.clone(), values.len()).unwrap().len(), values.len());
            assert_eq!(add_pooled(format, &words, values.len() + 2, &mut sum).unwrap_err().kind, ErrorKind::BadFrame);
        }
    }

    #[test]
    fn bodies_are_little_endian_words() {
        let w = [1u32, 0x0102_0304];
        assert_eq!(words_as_bytes(&w), &[1, 0, 0, 0, 4, 3, 2, 1]);
        let f = [1.5f32];
        assert_eq!(floats_as_bytes(&f), &1.5f32.to_le_bytes());
    }
}
