//! What is stored on the intermediaries: chunks, the session header and the
//! manifest, and the keys they live under. Pure; no I/O.
//!
//! Every record carries a CRC-32 (IEEE, `crc32fast`: SIMD/PCLMUL-accelerated,
//! several GB/s, so checksumming never limits a 100 Mbit/s–10 Gbit/s stream).
//! The threat is accidental damage (a bad intermediary, a stale key from an
//! earlier run, an operator's mistake), not an attacker: intermediaries are
//! the operator's own hosts. A keyed hash would be needed against tampering.
//!
//! Chunk (big-endian):
//!
//! ```text
//!  0       4       12      20      24      28  30       30+n
//!  +-------+-------+-------+-------+-------+---+--------+---------
//!  | "SLC1"|session|  seq  |  len  | crc32 |n  | VM name| payload (len bytes)
//!  +-------+-------+-------+-------+-------+---+--------+---------
//! ```
//! The CRC covers every byte but its own field. The session id ties a chunk
//! to one push, so a chunk left by an earlier, failed push of the same VM is
//! refused rather than spliced into the stream.
//!
//! Session header `head` and manifest `end` are fixed-size records with the
//! same trailing CRC (see [`Head`], [`Manifest`]).

use super::ScatterError;

const CHUNK_MAGIC: &[u8; 4] = b"SLC1";
const HEAD_MAGIC: &[u8; 4] = b"SLH1";
const END_MAGIC: &[u8; 4] = b"SLM1";
const CHUNK_FIXED: usize = 30;
/// A VM name longer than this is refused (it is part of every key).
pub const MAX_VM_NAME: usize = 64;
/// Largest chunk payload accepted: bounds what a damaged length field can
/// make the gatherer expect.
pub const MAX_CHUNK: usize = 64 << 20;

/// The keys of one VM's keyspace on every store. One keyspace per VM: two
/// VMs scattered through the same intermediaries never share a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Refuses names that could escape the keyspace or act as a SCAN glob.
    pub fn new(vm: &str) -> Result<Keys, ScatterError> {
        let ok = !vm.is_empty()
            && vm.len() <= MAX_VM_NAME
            && vm
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(ScatterError::BadVmName(vm.to_string()));
        }
        Ok(Keys {
            prefix: format!("solive:sg:{vm}:"),
        })
    }
    pub fn chunk(&self, seq: u64) -> String {
        format!("{}c:{seq}", self.prefix)
    }
    /// A list, per store, of the sequence numbers that store holds, in the
    /// order they were acknowledged: how the gatherer finds chunks that were
    /// spread by speed rather than by a fixed rule.
    pub fn index(&self) -> String {
        format!("{}idx", self.prefix)
    }
    pub fn head(&self) -> String {
        format!("{}head", self.prefix)
    }
    pub fn end(&self) -> String {
        format!("{}end", self.prefix)
    }
    /// Set by a push that failed, so a gatherer stops at once instead of
    /// waiting for its idle timeout.
    pub fn abort(&self) -> String {
        format!("{}abort", self.prefix)
    }
    /// A list of byte strings: what the destination's QEMU sent back on the
    /// migration connection (its return path), for the pusher to relay to
    /// the source's QEMU.
    pub fn return_path(&self) -> String {
        format!("{}rp", self.prefix)
    }
    /// SCAN pattern of the whole keyspace (the name holds no glob characters).
    pub fn pattern(&self) -> String {
        format!("{}*", self.prefix)
    }
}

/// One piece of the migration stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub session: u64,
    pub seq: u64,
    pub vm: String,
    pub payload: Vec<u8>,
}

fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

impl Chunk {
    pub fn encode(&self) -> Vec<u8> {
        let vm = self.vm.as_bytes();
        let mut out = Vec::with_capacity(CHUNK_FIXED + vm.len() + self.payload.len());
        out.extend_from_slice(CHUNK_MAGIC);
        out.extend_from_slice(&self.session.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        let sum = crc(&[
            &out[..24],
            &(vm.len() as u16).to_be_bytes(),
            vm,
            &self.payload,
        ]);
        out.extend_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&(vm.len() as u16).to_be_bytes());
        out.extend_from_slice(vm);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Checks, then parses: lengths are checked against the buffer before
    /// anything is sliced, and the CRC before the chunk is believed.
    pub fn decode(b: &[u8]) -> Result<Chunk, String> {
        if b.len() < CHUNK_FIXED {
            return Err(format!("{} bytes, shorter than a chunk header", b.len()));
        }
        if &b[..4] != CHUNK_MAGIC {
            return Err("not a chunk (bad magic)".into());
        }
        let len = be_u32(b, 20) as usize;
        let n = u16::from_be_bytes([b[28], b[29]]) as usize;
        if len > MAX_CHUNK || n > MAX_VM_NAME || b.len() != CHUNK_FIXED + n + len {
            return Err(format!(
                "lengths do not add up (payload {len}, name {n}, record {})",
                b.len()
            ));
        }
        let want = be_u32(b, 24);
        let got = crc(&[&b[..24], &b[28..]]);
        if want != got {
            return Err(format!("checksum mismatch ({got:08x}, want {want:08x})"));
        }
        let vm = std::str::from_utf8(&b[CHUNK_FIXED..CHUNK_FIXED + n])
            .map_err(|_| "VM name is not UTF-8".to_string())?
            .to_string();
        Ok(Chunk {
            session: be_u64(b, 4),
            seq: be_u64(b, 12),
            vm,
            payload: b[CHUNK_FIXED + n..].to_vec(),
        })
    }
}

/// Written to every store before the first chunk: which push this keyspace
/// belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub session: u64,
    /// How many stores the push spreads over: the gatherer must be given the
    /// same stores, and checks it was given as many.
    pub stores: u32,
}

impl Head {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        out.extend_from_slice(HEAD_MAGIC);
        out.extend_from_slice(&self.session.to_be_bytes());
        out.extend_from_slice(&self.stores.to_be_bytes());
        let sum = crc(&[&out]);
        out.extend_from_slice(&sum.to_be_bytes());
        out
    }
    pub fn decode(b: &[u8]) -> Result<Head, String> {
        check_record(b, HEAD_MAGIC, 20, "session header")?;
        Ok(Head {
            session: be_u64(b, 4),
            stores: be_u32(b, 12),
        })
    }
}

/// The end marker, written to every store once every chunk is acknowledged:
/// without it the stream is incomplete; with it the gatherer can check that
/// it got every chunk and the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    pub session: u64,
    pub chunks: u64,
    pub bytes: u64,
    /// CRC-32 of the whole stream (the payloads in sequence order).
    pub stream_crc: u32,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(36);
        out.extend_from_slice(END_MAGIC);
        out.extend_from_slice(&self.session.to_be_bytes());
        out.extend_from_slice(&self.chunks.to_be_bytes());
        out.extend_from_slice(&self.bytes.to_be_bytes());
        out.extend_from_slice(&self.stream_crc.to_be_bytes());
        let sum = crc(&[&out]);
        out.extend_from_slice(&sum.to_be_bytes());
        out
    }
    pub fn decode(b: &[u8]) -> Result<Manifest, String> {
        check_record(b, END_MAGIC, 36, "manifest")?;
        Ok(Manifest {
            session: be_u64(b, 4),
            chunks: be_u64(b, 12),
            bytes: be_u64(b, 20),
            stream_crc: be_u32(b, 28),
        })
    }
}

fn check_record(b: &[u8], magic: &[u8; 4], len: usize, what: &str) -> Result<(), String> {
    if b.len() != len {
        return Err(format!("{what}: {} bytes, want {len}", b.len()));
    }
    if &b[..4] != magic {
        return Err(format!("{what}: bad magic"));
    }
    let want = be_u32(b, len - 4);
    if crc(&[&b[..len - 4]]) != want {
        return Err(format!("{what}: checksum mismatch"));
    }
    Ok(())
}

/// The stream's running CRC, as both ends compute it.
#[derive(Default, Clone)]
pub struct StreamSum {
    h: crc32fast::Hasher,
    pub bytes: u64,
    pub chunks: u64,
}

impl StreamSum {
    pub fn add(&mut self, payload: &[u8]) {
        self.h.update(payload);
        self.bytes += payload.len() as u64;
        self.chunks += 1;
    }
    pub fn crc(&self) -> u32 {
        self.h.clone().finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Chunk {
        Chunk {
            session: 0x0102_0304_0506_0708,
            seq: 42,
            vm: "vm1".into(),
            payload: b"hello".to_vec(),
        }
    }

    #[test]
    fn chunk_layout_is_as_documented() {
        let b = sample().encode();
        assert_eq!(&b[..4], b"SLC1");
        assert_eq!(&b[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]); // session
        assert_eq!(&b[12..20], &42u64.to_be_bytes()); // seq
        assert_eq!(&b[20..24], &5u32.to_be_bytes()); // payload length
        assert_eq!(&b[28..30], &3u16.to_be_bytes()); // name length
        assert_eq!(&b[30..33], b"vm1");
        assert_eq!(&b[33..], b"hello");
        assert_eq!(Chunk::decode(&b).unwrap(), sample());
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let b = sample().encode();
        for i in 0..b.len() * 8 {
            let mut c = b.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert!(Chunk::decode(&c).is_err(), "flip of bit {i} accepted");
        }
    }

    #[test]
    fn truncated_or_extended_chunks_are_refused() {
        let b = sample().encode();
        for n in 0..b.len() {
            assert!(Chunk::decode(&b[..n]).is_err(), "prefix of {n} accepted");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(Chunk::decode(&longer).is_err());
    }

    #[test]
    fn head_and_manifest_round_trip_and_refuse_damage() {
        let h = Head {
            session: 7,
            stores: 2,
        };
        assert_eq!(Head::decode(&h.encode()).unwrap(), h);
        let m = Manifest {
            session: 7,
            chunks: 3,
            bytes: 1000,
            stream_crc: 0xdead_beef,
        };
        let mut b = m.encode();
        assert_eq!(Manifest::decode(&b).unwrap(), m);
        b[13] ^= 1;
        assert!(Manifest::decode(&b).is_err());
        assert!(Manifest::decode(&h.encode()).is_err());
        assert!(Head::decode(&m.encode()).is_err());
    }

    #[test]
    fn vm_names_cannot_escape_their_keyspace() {
        for bad in ["", "a*", "a:b", "a b", "x?", "[x]", &"v".repeat(65)] {
            assert!(Keys::new(bad).is_err(), "{bad:?} accepted");
        }
        let k = Keys::new("vm-1_a.b").unwrap();
        assert_eq!(k.chunk(3), "solive:sg:vm-1_a.b:c:3");
        assert!(k.chunk(3).starts_with(k.pattern().trim_end_matches('*')));
        assert_ne!(
            Keys::new("vm1").unwrap().index(),
            Keys::new("vm10").unwrap().index()
        );
        // Keys of vm1 never match vm10's pattern and the other way round.
        assert!(!Keys::new("vm10")
            .unwrap()
            .chunk(0)
            .starts_with(Keys::new("vm1").unwrap().pattern().trim_end_matches('*')));
    }

    #[test]
    fn stream_sum_is_the_crc_of_the_concatenation() {
        let mut s = StreamSum::default();
        s.add(b"abc");
        s.add(b"");
        s.add(b"def");
        assert_eq!(s.crc(), crc32fast::hash(b"abcdef"));
        assert_eq!((s.bytes, s.chunks), (6, 3));
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Chunk::decode(&b);
            let _ = Head::decode(&b);
            let _ = Manifest::decode(&b);
        }

        #[test]
        fn chunks_round_trip(session: u64, seq: u64, payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let c = Chunk { session, seq, vm: "vm1".into(), payload };
            prop_assert_eq!(Chunk::decode(&c.encode()).unwrap(), c);
        }
    }
}
