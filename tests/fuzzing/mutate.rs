//! The fuzz test's mutations: a seeded SplitMix64 and the byte- and text-level edits that
//! turn a valid file into the inputs of `tests/fuzz.rs`.

/// SplitMix64: the mutations are a pure function of (seed, target, input index).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, target: &str, index: usize) -> Self {
        let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in target.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Self(h ^ (index as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9))
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A position in `0..len`, a third of the time in the first and a third in the last 512
    /// bytes, where binary formats keep their headers (safetensors, npy) and directories (zip).
    fn pos(&mut self, len: usize) -> usize {
        if len == 0 {
            return 0;
        }
        match self.below(3) {
            0 => self.below(len.min(512)),
            1 => len - 1 - self.below(len.min(512)),
            _ => self.below(len),
        }
    }
}

const BOUNDARY: [u64; 12] = [
    0,
    1,
    2,
    0x7f,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];
const NUMBERS: [&str; 14] = [
    "0",
    "-1",
    "1",
    "-0",
    "1e309",
    "-1e309",
    "NaN",
    "inf",
    "4294967296",
    "18446744073709551616",
    "99999999999",
    "1.5",
    "65536",
    "2147483647",
];
const SYNTAX: [&str; 18] = [
    "\"", "{", "}", "[", "]", ",", ":", "=", "#", "null", "true", "\n", "\\u0000", "é", "\u{202e}",
    "[[", "\"\"\"", "\\",
];

/// A safetensors file's JSON header range, when `d` is one.
fn safetensors_header(d: &[u8]) -> Option<usize> {
    let n = u64::from_le_bytes(d.get(..8)?.try_into().ok()?) as usize;
    (n > 0 && n <= d.len() - 8 && d[8] == b'{').then_some(n)
}

/// One input. Half of the inputs made from a safetensors file mutate its JSON header as text
/// (dtypes, shapes, offsets, metadata) and fix the length prefix, so that they reach the
/// checks behind the header's parser; the others are 1 to 4 stacked byte-level mutations of
/// `seed`, splicing from `other`.
pub fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8], text: bool) -> Vec<u8> {
    if !text
        && let Some(n) = safetensors_header(seed)
        && rng.below(2) == 0
    {
        let header = mutate(rng, &seed[8..8 + n], &[], true);
        let mut d = (header.len() as u64).to_le_bytes().to_vec();
        d.extend_from_slice(&header);
        d.extend_from_slice(&seed[8 + n..]);
        return d;
    }
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let kinds = if text { 10 } else { 8 };
        match rng.below(kinds) {
            0 if !d.is_empty() => {
                let p = rng.pos(d.len());
                d[p] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let p = rng.pos(d.len());
                d[p] = [0u8, 1, 0x7f, 0x80, 0xff, b'"', b'{', b'\n', b'0', b'9'][rng.below(10)];
            }
            2 => {
                let v = BOUNDARY[rng.below(BOUNDARY.len())];
                let width = [1usize, 2, 4, 8][rng.below(4)];
                let p = rng.pos(d.len());
                let bytes = v.to_le_bytes();
                for (i, b) in bytes.iter().take(width).enumerate() {
                    if let Some(x) = d.get_mut(p + i) {
                        *x = *b;
                    }
                }
            }
            3 => {
                let p = rng.pos(d.len() + 1).min(d.len());
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(p..p, bytes);
            }
            4 if !d.is_empty() => {
                let p = rng.pos(d.len());
                let n = (1 + rng.below(64)).min(d.len() - p);
                d.drain(p..p + n);
            }
            5 if !d.is_empty() => {
                let p = rng.pos(d.len());
                let n = (1 + rng.below(64)).min(d.len() - p);
                let piece = d[p..p + n].to_vec();
                let q = rng.pos(d.len() + 1).min(d.len());
                d.splice(q..q, piece);
            }
            6 => {
                let n = rng.below(d.len() + 1);
                d.truncate(n);
            }
            7 if !other.is_empty() && !d.is_empty() => {
                let a = rng.below(other.len());
                let n = (1 + rng.below(256)).min(other.len() - a);
                let p = rng.pos(d.len());
                let end = (p + n).min(d.len());
                d.splice(p..end, other[a..a + n].iter().copied());
            }
            8 => {
                // Replace a run of digits (a size, a count, a rate) with an extreme number.
                let starts: Vec<usize> = (0..d.len())
                    .filter(|&i| d[i].is_ascii_digit() && (i == 0 || !d[i - 1].is_ascii_digit()))
                    .collect();
                if !starts.is_empty() {
                    let s = starts[rng.below(starts.len())];
                    let e = (s..d.len())
                        .find(|&i| !d[i].is_ascii_digit())
                        .unwrap_or(d.len());
                    let n = NUMBERS[rng.below(NUMBERS.len())];
                    d.splice(s..e, n.bytes());
                }
            }
            9 => {
                let p = rng.pos(d.len() + 1).min(d.len());
                let s = SYNTAX[rng.below(SYNTAX.len())];
                d.splice(p..p, s.bytes());
            }
            _ => {}
        }
    }
    d
}
