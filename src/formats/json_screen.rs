//! A reader between the body and serde_json that holds the whole body to
//! rules serde_json applies only to the values it builds. The many fields
//! this parser skips are skimmed by serde_json without a recursion limit
//! and without UTF-8 validation; screening the bytes as they go by gives
//! every part of the body the same treatment, for one pass over each buffer.

use std::io::Read;

/// The deepest nesting accepted, as serde_json's own recursion limit.
pub(super) const MAX_JSON_DEPTH: usize = 128;

/// Why the screen stopped the body. Travels inside an `io::Error` through
/// serde_json, and is told apart from a real read failure by its type.
#[derive(Debug, thiserror::Error)]
pub(super) enum Rejected {
    #[error("more than {MAX_JSON_DEPTH} nested arrays or objects (recursion limit) at byte {0}")]
    TooDeep(u64),
    #[error("invalid UTF-8 near byte {0}")]
    NotUtf8(u64),
}

pub(super) struct Screened<R> {
    inner: R,
    /// Bytes screened so far, for error positions.
    offset: u64,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The start of a UTF-8 sequence cut by the end of the last read.
    partial: [u8; 4],
    partial_len: usize,
}

/// Screens `inner`, dropping a leading UTF-8 BOM: detection skips one,
/// serde_json refuses it.
pub(super) fn screen(mut inner: impl Read) -> std::io::Result<Screened<impl Read>> {
    let mut head = [0u8; 3];
    let mut filled = 0;
    while filled < head.len() {
        match inner.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let kept = if head[..filled] == *b"\xEF\xBB\xBF" { &[][..] } else { &head[..filled] };
    Ok(Screened::new(std::io::Cursor::new(kept.to_vec()).chain(inner)))
}

/// The screen over a whole body in memory: the body without its BOM, or
/// why it was refused (the same reasons, at the same offsets, as [`screen`]).
pub(super) fn screen_slice(body: &[u8]) -> Result<&[u8], Rejected> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut screened = Screened::new(std::io::empty());
    screened.nesting(body)?;
    screened.utf8(body)?;
    if screened.partial_len > 0 {
        return Err(Rejected::NotUtf8(body.len() as u64));
    }
    Ok(body)
}

fn reject(why: Rejected) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

impl<R: Read> Screened<R> {
    fn new(inner: R) -> Self {
        Self { inner, offset: 0, depth: 0, in_string: false, escaped: false, partial: [0; 4], partial_len: 0 }
    }

    fn nesting(&mut self, bytes: &[u8]) -> Result<(), Rejected> {
        for (i, &byte) in bytes.iter().enumerate() {
            if self.in_string {
                match byte {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth > MAX_JSON_DEPTH {
                        return Err(Rejected::TooDeep(self.offset + i as u64));
                    }
                }
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }

    fn utf8(&mut self, mut bytes: &[u8]) -> Result<(), Rejected> {
        let bad = Rejected::NotUtf8(self.offset);
        if self.partial_len > 0 {
            let needed = match self.partial[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (needed - self.partial_len).min(bytes.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&bytes[..take]);
            self.partial_len += take;
            bytes = &bytes[take..];
            if self.partial_len < needed {
                return Ok(());
            }
            std::str::from_utf8(&self.partial[..needed]).map_err(|_| bad)?;
            self.partial_len = 0;
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            // A sequence cut short by the buffer's end, not a bad one.
            Err(e) if e.error_len().is_none() => {
                let rest = &bytes[e.valid_up_to()..];
                self.partial[..rest.len()].copy_from_slice(rest);
                self.partial_len = rest.len();
                Ok(())
            }
            Err(e) => Err(Rejected::NotUtf8(self.offset + e.valid_up_to() as u64)),
        }
    }
}

impl<R: Read> Read for Screened<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.partial_len > 0 {
            return Err(reject(Rejected::NotUtf8(self.offset)));
        }
        let bytes = &buf[..n];
        self.nesting(bytes).map_err(reject)?;
        self.utf8(bytes).map_err(reject)?;
        self.offset += n as u64;
        Ok(n)
    }
}
