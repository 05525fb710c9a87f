//! The encoding layer shared by TC and GPP strings: base64url (no `=`), and big-endian bit
//! readers and writers over bytes.
//!
//! Decoding turns a segment's characters into bytes once (on the stack for segments of up to
//! [`STACK_CHARS`] characters, which covers every string seen in practice) and then reads fields
//! out of those bytes with shifts, never bit by bit.

use crate::error::{Error, Segment};

/// Segments of up to this many characters are decoded into a stack buffer; longer ones use the
/// heap.
pub(crate) const STACK_CHARS: usize = 1024;
const STACK_BYTES: usize = STACK_CHARS * 6 / 8 + 8;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// 0xFF marks a byte outside the alphabet.
const REVERSE: [u8; 256] = {
    let mut table = [0xFFu8; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// The 6-bit value of a base64url character, if it is one.
pub(crate) fn sextet(c: u8) -> Option<u8> {
    let v = REVERSE[c as usize];
    (v != 0xFF).then_some(v)
}

/// Decodes one base64url segment and hands a [`BitReader`] over its bits to `f`.
///
/// Trailing `=` are stripped (a harmless leniency: iabtcf-java accepts them). Any other
/// character outside the alphabet is an [`Error::InvalidBase64`].
pub(crate) fn with_reader<R>(
    segment: Segment,
    text: &str,
    f: impl FnOnce(&mut BitReader<'_>) -> Result<R, Error>,
) -> Result<R, Error> {
    let chars = text.trim_end_matches('=').as_bytes();
    // Two stack sizes: zeroing 776 bytes for a 44-character core would cost more than reading it.
    if chars.len() <= 128 {
        let mut buf = [0u8; 128 * 6 / 8 + 8];
        let len = fill(segment, text, chars, &mut buf)?;
        f(&mut BitReader::new(
            segment,
            &buf[..len + 8],
            chars.len() * 6,
        ))
    } else if chars.len() <= STACK_CHARS {
        let mut buf = [0u8; STACK_BYTES];
        let len = fill(segment, text, chars, &mut buf)?;
        f(&mut BitReader::new(
            segment,
            &buf[..len + 8],
            chars.len() * 6,
        ))
    } else {
        let mut buf = vec![0u8; (chars.len() * 6).div_ceil(8) + 8];
        let len = fill(segment, text, chars, &mut buf)?;
        f(&mut BitReader::new(
            segment,
            &buf[..len + 8],
            chars.len() * 6,
        ))
    }
}

/// Writes the bits of `chars` into `out` (which is zeroed and long enough, with 8 spare bytes);
/// returns the number of bytes that hold data.
fn fill(segment: Segment, text: &str, chars: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    let error = |i: usize| Error::InvalidBase64 {
        segment,
        position: i,
        character: text
            .get(i..)
            .and_then(|t| t.chars().next())
            .unwrap_or('\u{FFFD}'),
    };
    // Eight characters make six bytes. Invalid characters map to 0xFF, which sets bits above
    // the low six in `bad`: checked once at the end, then located.
    let mut bad = 0u8;
    let mut octets = chars.chunks_exact(8);
    let mut sextets = out.chunks_exact_mut(6);
    for (c, o) in (&mut octets).zip(&mut sextets) {
        let mut acc = 0u64;
        for &ch in c {
            let v = REVERSE[ch as usize];
            bad |= v;
            acc = (acc << 6) | u64::from(v & 63);
        }
        o.copy_from_slice(&acc.to_be_bytes()[2..]);
    }
    if bad > 63 {
        let i = chars
            .iter()
            .position(|&c| REVERSE[c as usize] == 0xFF)
            .unwrap_or(0);
        return Err(error(i));
    }
    let mut o = chars.len() / 8 * 6;
    let mut i = chars.len() / 8 * 8;
    let mut quads = octets.remainder().chunks_exact(4);
    for q in &mut quads {
        let a = REVERSE[q[0] as usize];
        let b = REVERSE[q[1] as usize];
        let c = REVERSE[q[2] as usize];
        let d = REVERSE[q[3] as usize];
        if (a | b | c | d) > 63 {
            let k = q
                .iter()
                .position(|&c| REVERSE[c as usize] == 0xFF)
                .unwrap_or(0);
            return Err(error(i + k));
        }
        let v = (u32::from(a) << 18) | (u32::from(b) << 12) | (u32::from(c) << 6) | u32::from(d);
        out[o] = (v >> 16) as u8;
        out[o + 1] = (v >> 8) as u8;
        out[o + 2] = v as u8;
        o += 3;
        i += 4;
    }
    let mut acc: u32 = 0;
    let mut nbits: usize = 0;
    for (k, &c) in quads.remainder().iter().enumerate() {
        let v = sextet(c).ok_or_else(|| error(i + k))?;
        acc = (acc << 6) | u32::from(v);
        nbits += 6;
    }
    // Left-align the remaining 6, 12 or 18 bits into whole bytes.
    if nbits > 0 {
        let bytes = nbits.div_ceil(8);
        acc <<= bytes * 8 - nbits;
        for b in 0..bytes {
            out[o + b] = (acc >> (8 * (bytes - 1 - b))) as u8;
        }
        o += bytes;
    }
    Ok(o)
}

/// Reads big-endian bit fields from decoded bytes. Every read checks the segment's length and
/// fails with [`Error::Truncated`] naming the field and its bit offset.
#[derive(Clone, Copy)]
pub(crate) struct BitReader<'a> {
    segment: Segment,
    /// The decoded bytes followed by at least 8 zero bytes, so an 8-byte load never runs off.
    data: &'a [u8],
    pos: usize,
    len: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(segment: Segment, data: &'a [u8], len: usize) -> Self {
        BitReader {
            segment,
            data,
            pos: 0,
            len,
        }
    }

    /// Switches the segment named in errors (once a segment's type is known).
    pub(crate) fn set_segment(&mut self, segment: Segment) {
        self.segment = segment;
    }

    /// The current bit offset.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bits left (padding included).
    pub(crate) fn remaining(&self) -> usize {
        self.len - self.pos
    }

    /// An [`Error::Truncated`] for `field` needing `needed` bits here.
    pub(crate) fn truncated(&self, field: &'static str, needed: usize) -> Error {
        Error::Truncated {
            segment: self.segment,
            field,
            bit: self.pos,
            needed,
            available: self.remaining(),
        }
    }

    /// An [`Error::InvalidField`] for `field` starting at bit `bit`.
    pub(crate) fn invalid(&self, field: &'static str, bit: usize, reason: String) -> Error {
        Error::InvalidField {
            segment: self.segment,
            field,
            bit,
            reason,
        }
    }

    /// Peeks `n` (≤ 57) bits at the current position without bounds checks against `len`.
    #[inline]
    fn peek(&self, n: u32) -> u64 {
        debug_assert!(n <= 57);
        if n == 0 {
            return 0;
        }
        let byte = self.pos / 8;
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.data[byte..byte + 8]);
        let word = u64::from_be_bytes(w) << (self.pos % 8);
        word >> (64 - n)
    }

    /// Reads an `n`-bit (≤ 57) unsigned integer.
    #[inline]
    pub(crate) fn read(&mut self, n: u32, field: &'static str) -> Result<u64, Error> {
        if self.remaining() < n as usize {
            return Err(self.truncated(field, n as usize));
        }
        let v = self.peek(n);
        self.pos += n as usize;
        Ok(v)
    }

    /// Reads one bit as a boolean.
    #[inline]
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, Error> {
        Ok(self.read(1, field)? == 1)
    }

    /// Calls `f(offset, bits, k)` for the next `n` bits in chunks of `k` ≤ 56, where bit `j`
    /// of `bits` is the bit at `offset + j` from the current position (least significant
    /// first, ready to OR into a bitmap). The caller has checked that `n` bits remain.
    #[inline]
    pub(crate) fn for_each_chunk(&mut self, n: usize, mut f: impl FnMut(usize, u64, u32)) {
        debug_assert!(n <= self.remaining());
        let mut done = 0;
        while done < n {
            let take = (n - done).min(56) as u32;
            f(done, self.peek(take).reverse_bits() >> (64 - take), take);
            self.pos += take as usize;
            done += take as usize;
        }
    }

    /// Reads a Fibonacci-coded integer (Zeckendorf bits, low Fibonacci number first, closed by
    /// an extra `1`). Values beyond `u16` are rejected.
    pub(crate) fn fibonacci(&mut self, field: &'static str) -> Result<u16, Error> {
        let start = self.pos;
        let (mut a, mut b) = (1u64, 2u64);
        let mut value = 0u64;
        let mut last = false;
        loop {
            let bit = self.bool(field)?;
            if bit && last {
                return u16::try_from(value)
                    .map_err(|_| self.invalid(field, start, format!("{value} is too large")));
            }
            if bit {
                value += a;
            }
            last = bit;
            (a, b) = (b, a + b);
            if self.pos - start > 25 {
                return Err(self.invalid(field, start, "Fibonacci code is too long".into()));
            }
        }
    }
}

/// Appends big-endian bit fields to a byte buffer.
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits pending in `acc`, at its low end.
    acc: u64,
    nacc: u32,
    len: usize,
}

impl BitWriter {
    pub(crate) fn new() -> Self {
        BitWriter {
            bytes: Vec::with_capacity(64),
            acc: 0,
            nacc: 0,
            len: 0,
        }
    }

    /// Number of bits written.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends the low `n` (≤ 32) bits of `v`.
    #[inline]
    pub(crate) fn write(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 32);
        debug_assert!(n == 64 || v >> n == 0, "{v} does not fit {n} bits");
        self.acc = (self.acc << n) | v;
        self.nacc += n;
        self.len += n as usize;
        while self.nacc >= 8 {
            self.nacc -= 8;
            self.bytes.push((self.acc >> self.nacc) as u8);
        }
        self.acc &= (1u64 << self.nacc) - 1;
    }

    /// Appends an integer of up to 36 bits (for dates).
    pub(crate) fn write_wide(&mut self, v: u64, n: u32) {
        if n > 32 {
            self.write(v >> 32, n - 32);
            self.write(v & 0xFFFF_FFFF, 32);
        } else {
            self.write(v, n);
        }
    }

    /// Appends one bit.
    #[inline]
    pub(crate) fn bit(&mut self, b: bool) {
        self.write(u64::from(b), 1);
    }

    /// Appends a Fibonacci-coded integer (≥ 1).
    pub(crate) fn fibonacci(&mut self, v: u16) {
        debug_assert!(v >= 1);
        let mut fibs = vec![1u32, 2];
        while fibs[fibs.len() - 1] + fibs[fibs.len() - 2] <= u32::from(v) {
            let n = fibs[fibs.len() - 1] + fibs[fibs.len() - 2];
            fibs.push(n);
        }
        let mut rest = u32::from(v);
        let mut bits = vec![false; fibs.len()];
        for i in (0..fibs.len()).rev() {
            if rest >= fibs[i] {
                bits[i] = true;
                rest -= fibs[i];
            }
        }
        let top = bits.iter().rposition(|&b| b).unwrap_or(0);
        for &b in &bits[..=top] {
            self.bit(b);
        }
        self.bit(true);
    }

    /// Pads with zeros to a multiple of 24 bits (iabtcf-es and iabgpp-es
    /// `TraditionalBase64UrlEncoder`) and returns the base64url text.
    pub(crate) fn finish_traditional(mut self) -> String {
        while !self.len.is_multiple_of(24) {
            self.write(0, (24 - self.len % 24).min(8) as u32);
        }
        self.into_base64()
    }

    /// Pads with zeros to a multiple of 8, then of 6 bits (iabgpp-es
    /// `CompressedBase64UrlEncoder`, used for the GPP header and US sections).
    pub(crate) fn finish_compressed(mut self) -> String {
        while !self.len.is_multiple_of(8) {
            self.write(0, (8 - self.len % 8) as u32);
        }
        while !self.len.is_multiple_of(6) {
            self.write(0, 1);
        }
        self.into_base64()
    }

    /// Base64url of the bits written; the length is a multiple of 6.
    fn into_base64(mut self) -> String {
        debug_assert_eq!(self.len % 6, 0);
        if self.nacc > 0 {
            self.bytes.push((self.acc << (8 - self.nacc)) as u8);
        }
        let bytes = self.bytes;
        let n = self.len / 6;
        let mut out = Vec::with_capacity(n + 4);
        for t in bytes.chunks_exact(3) {
            let v = (u32::from(t[0]) << 16) | (u32::from(t[1]) << 8) | u32::from(t[2]);
            for shift in [18, 12, 6, 0] {
                out.push(ALPHABET[(v >> shift) as usize & 0x3F]);
            }
        }
        let rest = bytes.chunks_exact(3).remainder();
        if !rest.is_empty() {
            let v = rest
                .iter()
                .enumerate()
                .fold(0u32, |v, (i, &b)| v | u32::from(b) << (16 - 8 * i));
            for shift in [18, 12, 6, 0] {
                out.push(ALPHABET[(v >> shift) as usize & 0x3F]);
            }
        }
        // Whole triples may produce up to 3 characters past the last 6-bit group written.
        out.truncate(n);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits_of(text: &str) -> String {
        with_reader(Segment::Core, text, |r| {
            let mut s = String::new();
            while r.remaining() > 0 {
                s.push(if r.bool("x")? { '1' } else { '0' });
            }
            Ok(s)
        })
        .unwrap()
    }

    #[test]
    fn base64_round_trips_bits() {
        for text in ["", "A", "AB", "ABC", "ABCD", "CPSG_8A", "-_az09", "DBABMA"] {
            let bits = bits_of(text);
            assert_eq!(bits.len(), text.len() * 6);
            let mut w = BitWriter::new();
            for c in bits.chars() {
                w.bit(c == '1');
            }
            assert_eq!(w.into_base64(), text);
        }
    }

    #[test]
    fn invalid_character_is_located() {
        let err = with_reader(Segment::Core, "CPS+G_8A", |_| Ok(())).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidBase64 {
                position: 3,
                character: '+',
                ..
            }
        ));
        let err = with_reader(Segment::Core, "CPSGG_8é", |_| Ok(())).unwrap_err();
        assert!(matches!(err, Error::InvalidBase64 { position: 7, .. }));
    }

    #[test]
    fn fibonacci_codes_match_the_spec() {
        for (v, code) in [
            (1, "11"),
            (2, "011"),
            (3, "0011"),
            (4, "1011"),
            (5, "00011"),
            (6, "10011"),
            (7, "01011"),
        ] {
            let mut w = BitWriter::new();
            w.fibonacci(v);
            assert_eq!(w.len(), code.len());
            let mut w2 = BitWriter::new();
            for c in code.chars() {
                w2.bit(c == '1');
            }
            assert_eq!(w.bytes, w2.bytes);
            assert_eq!(w.acc, w2.acc);
        }
        for v in 1..=3000u16 {
            let mut w = BitWriter::new();
            w.fibonacci(v);
            let text = w.finish_compressed();
            let got = with_reader(Segment::GppHeader, &text, |r| r.fibonacci("x")).unwrap();
            assert_eq!(got, v);
        }
    }
}
