//! Short byte strings kept inline: the parts of a request head.
//!
//! The method, target, path and most header names and values of a request are short. Kept
//! inline, a typical request head costs one allocation (its header list) instead of one
//! per part; longer parts (a `User-Agent`, a cookie) go to the heap as before.

use std::fmt;
use std::ops::Deref;

/// Bytes kept inline up to this length (the value makes [`HeadBytes`] 32 bytes).
const INLINE: usize = 30;

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

/// Bytes of a request head, such as a header value (which may hold obs-text).
#[derive(Clone)]
pub struct HeadBytes(Repr);

impl HeadBytes {
    pub fn new(bytes: &[u8]) -> HeadBytes {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut inline = [0u8; INLINE];
                inline[..bytes.len()].copy_from_slice(bytes);
                HeadBytes(Repr::Inline { len, bytes: inline })
            }
            _ => HeadBytes(Repr::Heap(bytes.into())),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(bytes) => bytes,
        }
    }
}

impl Default for HeadBytes {
    fn default() -> HeadBytes {
        HeadBytes::new(b"")
    }
}

impl Deref for HeadBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for HeadBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_bytes(), f)
    }
}

impl PartialEq for HeadBytes {
    fn eq(&self, other: &HeadBytes) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for HeadBytes {}

impl PartialEq<&[u8]> for HeadBytes {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_bytes() == *other
    }
}

/// The bytes as text when they are ASCII (checked word by word, without UTF-8 decoding).
pub fn ascii_str(bytes: &[u8]) -> Option<&str> {
    if !bytes.is_ascii() {
        return None;
    }
    // SAFETY: ASCII is valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// Text of a request head (a method, a target, a header name): the parser has checked it,
/// and it is valid UTF-8 by construction.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HeadText(HeadBytes);

impl HeadText {
    pub fn new(text: &str) -> HeadText {
        HeadText(HeadBytes::new(text.as_bytes()))
    }

    /// Text from bytes the parser has checked to be ASCII (anything else is replaced, as by
    /// `String::from_utf8_lossy`, rather than trusted).
    pub fn from_ascii(bytes: &[u8]) -> HeadText {
        match ascii_str(bytes) {
            Some(text) => HeadText::new(text),
            None => HeadText::new(&String::from_utf8_lossy(bytes)),
        }
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: the bytes were copied from a `&str` in `new` and are never changed.
        unsafe { std::str::from_utf8_unchecked(self.0.as_bytes()) }
    }
}

impl Deref for HeadText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for HeadText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HeadText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for HeadText {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for HeadText {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_values_read_back_the_same() {
        for len in [0, 1, 29, 30, 31, 300] {
            let text = "x".repeat(len);
            let head = HeadText::new(&text);
            assert_eq!(head.as_str(), text);
            assert_eq!(head, text.as_str());
            assert_eq!(head.clone(), head);
            let bytes = HeadBytes::new(text.as_bytes());
            assert_eq!(&*bytes, text.as_bytes());
        }
        assert_eq!(HeadText::from_ascii(b"GET"), "GET");
        assert_eq!(ascii_str(b"GET"), Some("GET"));
        assert_eq!(ascii_str(b"caf\xe9"), None);
        assert_eq!(HeadText::from_ascii(b"caf\xe9"), "caf\u{fffd}");
        assert!(matches!(HeadBytes::new(&[b'a'; 30]).0, Repr::Inline { .. }));
        assert!(matches!(HeadBytes::new(&[b'a'; 31]).0, Repr::Heap(_)));
        assert_eq!(std::mem::size_of::<HeadBytes>(), 32);
    }

    #[test]
    fn obs_text_bytes_are_kept() {
        let bytes = HeadBytes::new(b"caf\xe9");
        assert_eq!(bytes, &b"caf\xe9"[..]);
        assert_eq!(format!("{bytes:?}"), format!("{:?}", b"caf\xe9"));
    }
}
