//! TTLV, KMIP's binary encoding: every item is a 3-byte tag, a 1-byte type, a 4-byte length
//! and a value padded with zeros to a multiple of 8 bytes.
//!
//! The decoder is the first code to touch bytes from a client that has only shown a
//! certificate, so it is strict and bounded: a message is at most `Limits::message_len_max`
//! bytes, `depth_max` structures deep and `items_max` items in all; every length must be the
//! one its type allows, padding must be zero, a Boolean is 0 or 1, text is UTF-8, and a
//! structure's children must fill it exactly. What it accepts re-encodes to the same bytes
//! (the fuzz harness, `kmip-fuzz`, checks that on every input it accepts), so there is one way
//! to say each thing and nothing hides in the slack. Every error names the byte offset, for the
//! log line an operator reads when a library will not talk to us.
//!
//! Byte strings may be key material: they are zeroized on drop and `Debug` shows only their
//! length, so a decoded message can be logged whole.

use core::fmt;

use zeroize::Zeroizing;

use crate::tag::{self, Tag};

/// Tag, type and length: the bytes read before a value.
pub const HEADER_LEN: usize = 8;

/// The item types of KMIP 1.0 to 2.0 (2.0 adds Date-Time Extended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ItemType {
    Structure = 0x01,
    Integer = 0x02,
    LongInteger = 0x03,
    BigInteger = 0x04,
    Enumeration = 0x05,
    Boolean = 0x06,
    TextString = 0x07,
    ByteString = 0x08,
    DateTime = 0x09,
    Interval = 0x0A,
    DateTimeExtended = 0x0B,
}

impl ItemType {
    pub fn from_byte(byte: u8) -> Option<ItemType> {
        Some(match byte {
            0x01 => ItemType::Structure,
            0x02 => ItemType::Integer,
            0x03 => ItemType::LongInteger,
            0x04 => ItemType::BigInteger,
            0x05 => ItemType::Enumeration,
            0x06 => ItemType::Boolean,
            0x07 => ItemType::TextString,
            0x08 => ItemType::ByteString,
            0x09 => ItemType::DateTime,
            0x0A => ItemType::Interval,
            0x0B => ItemType::DateTimeExtended,
            _ => return None,
        })
    }
}

/// A value. Date-Times are signed seconds since the Unix epoch (microseconds for the extended
/// form); a Big Integer keeps its big-endian two's-complement bytes as sent.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    LongInteger(i64),
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    ByteString(Zeroizing<Vec<u8>>),
    DateTime(i64),
    Interval(u32),
    DateTimeExtended(i64),
}

impl Value {
    pub fn item_type(&self) -> ItemType {
        match self {
            Value::Structure(_) => ItemType::Structure,
            Value::Integer(_) => ItemType::Integer,
            Value::LongInteger(_) => ItemType::LongInteger,
            Value::BigInteger(_) => ItemType::BigInteger,
            Value::Enumeration(_) => ItemType::Enumeration,
            Value::Boolean(_) => ItemType::Boolean,
            Value::TextString(_) => ItemType::TextString,
            Value::ByteString(_) => ItemType::ByteString,
            Value::DateTime(_) => ItemType::DateTime,
            Value::Interval(_) => ItemType::Interval,
            Value::DateTimeExtended(_) => ItemType::DateTimeExtended,
        }
    }
}

/// One tagged item; a message is one Structure item.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    pub tag: Tag,
    pub value: Value,
}

impl Item {
    pub fn new(tag: Tag, value: Value) -> Item {
        Item { tag, value }
    }

    pub fn structure(tag: Tag, children: Vec<Item>) -> Item {
        Item::new(tag, Value::Structure(children))
    }

    pub fn text(tag: Tag, text: impl Into<String>) -> Item {
        Item::new(tag, Value::TextString(text.into()))
    }

    pub fn bytes(tag: Tag, bytes: Vec<u8>) -> Item {
        Item::new(tag, Value::ByteString(Zeroizing::new(bytes)))
    }

    pub fn enumeration(tag: Tag, value: u32) -> Item {
        Item::new(tag, Value::Enumeration(value))
    }

    pub fn integer(tag: Tag, value: i32) -> Item {
        Item::new(tag, Value::Integer(value))
    }

    pub fn boolean(tag: Tag, value: bool) -> Item {
        Item::new(tag, Value::Boolean(value))
    }

    pub fn date_time(tag: Tag, seconds: i64) -> Item {
        Item::new(tag, Value::DateTime(seconds))
    }

    /// The children of a structure; none for any other type.
    pub fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(children) => children,
            _ => &[],
        }
    }

    /// The first child with `tag`.
    pub fn child(&self, tag: Tag) -> Option<&Item> {
        self.children().iter().find(|c| c.tag == tag)
    }

    /// Every child with `tag`, in order.
    pub fn children_tagged(&self, tag: Tag) -> impl Iterator<Item = &Item> {
        self.children().iter().filter(move |c| c.tag == tag)
    }

    /// The encoded length, header and padding included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + padded(self.value_len())
    }

    /// The length field: value bytes without padding.
    fn value_len(&self) -> usize {
        match &self.value {
            Value::Structure(children) => children.iter().map(Item::encoded_len).sum(),
            Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
            Value::LongInteger(_)
            | Value::Boolean(_)
            | Value::DateTime(_)
            | Value::DateTimeExtended(_) => 8,
            Value::BigInteger(b) => b.len(),
            Value::TextString(s) => s.len(),
            Value::ByteString(b) => b.len(),
        }
    }

    /// Appends the encoding to `out`. Fails only for an item whose length does not fit TTLV's
    /// 32-bit field, or a Big Integer that is not a whole number of 8-byte words.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&self.tag.0.to_be_bytes()[1..]);
        out.push(self.value.item_type() as u8);
        out.extend_from_slice(&[0; 4]);
        match &self.value {
            Value::Structure(children) => {
                for child in children {
                    child.encode_into(out)?;
                }
            }
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) | Value::DateTimeExtended(v) => {
                out.extend_from_slice(&v.to_be_bytes());
            }
            Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
            Value::BigInteger(b) => {
                if b.is_empty() || b.len() % 8 != 0 {
                    return Err(EncodeError::BigIntegerNotWords { tag: self.tag, len: b.len() });
                }
                out.extend_from_slice(b);
            }
            Value::TextString(s) => out.extend_from_slice(s.as_bytes()),
            Value::ByteString(b) => out.extend_from_slice(b),
        }
        let len = out.len() - start - HEADER_LEN;
        let field = u32::try_from(len).map_err(|_| EncodeError::TooLong { tag: self.tag, len })?;
        out[start + 4..start + HEADER_LEN].copy_from_slice(&field.to_be_bytes());
        out.resize(start + HEADER_LEN + padded(len), 0);
        Ok(())
    }

    /// The encoding in a buffer that is zeroized on drop (it may hold a key).
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.encoded_len()));
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

/// Rounds a value length up to the 8-byte boundary. Lengths come from a u32, so on the 64-bit
/// targets this runs on the sum cannot overflow.
fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("KMIP item {tag:?} is {len} bytes, more than TTLV's length field holds")]
    TooLong { tag: Tag, len: usize },
    #[error("KMIP Big Integer {tag:?} is {len} bytes; it must be a whole number of 8-byte words")]
    BigIntegerNotWords { tag: Tag, len: usize },
}

/// The decoder's bounds. A request past any of them is refused before it costs more than its
/// own bytes.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Whole message, header included.
    pub message_len_max: usize,
    /// Structures inside structures; the message itself is depth 1.
    pub depth_max: usize,
    /// Items of every depth.
    pub items_max: usize,
}

impl Limits {
    /// What the KMIP listener accepts. A Tape Library batch of 32 Creates with 30 vendor
    /// attributes each is about 150 KiB and 4,000 items; a request message nests at most about
    /// 8 deep (message, batch item, payload, template, attribute, value, its fields).
    pub const SERVER: Limits =
        Limits { message_len_max: 1 << 20, depth_max: 16, items_max: 16_384 };
}

/// Why bytes are not a TTLV item. `at` is the offset of the item (or byte) at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("TTLV truncated at byte {at}: {needed} bytes needed, {available} left")]
    Truncated { at: usize, needed: usize, available: usize },
    #[error("TTLV message of {len} bytes is over the {len_max}-byte limit")]
    TooLong { len: usize, len_max: usize },
    #[error(
        "TTLV tag {tag:#08x} at byte {at} is neither a KMIP tag (42xxxx) nor an extension (54xxxx)"
    )]
    BadTag { at: usize, tag: u32 },
    #[error("TTLV item type {type_byte:#04x} at byte {at} is not a KMIP type")]
    UnknownType { at: usize, type_byte: u8 },
    #[error("TTLV {item_type:?} at byte {at} has length {len}, which that type does not allow")]
    BadLength { at: usize, item_type: ItemType, len: usize },
    #[error("TTLV padding at byte {at} is not zero")]
    NonZeroPadding { at: usize },
    #[error("TTLV Boolean at byte {at} is {value}; only 0 and 1 are booleans")]
    BadBoolean { at: usize, value: u64 },
    #[error("TTLV Text String at byte {at} is not UTF-8")]
    NotUtf8 { at: usize },
    #[error("TTLV value at byte {at} runs past the end of its structure")]
    StructureOverrun { at: usize },
    #[error("TTLV structures nest deeper than {depth_max} at byte {at}")]
    TooDeep { at: usize, depth_max: usize },
    #[error("TTLV message has more than {items_max} items")]
    TooManyItems { items_max: usize },
    #[error("TTLV message has {extra} bytes after its item, from byte {at}")]
    Trailing { at: usize, extra: usize },
}

/// The length of the message a header announces, header included; what a reader must read
/// before it can decode. Checked against `limits` so a forged length never sizes a buffer.
pub fn message_len(header: &[u8; HEADER_LEN], limits: &Limits) -> Result<usize, DecodeError> {
    let type_byte = header[3];
    let item_type =
        ItemType::from_byte(type_byte).ok_or(DecodeError::UnknownType { at: 0, type_byte })?;
    check_tag(header, 0)?;
    let len = be_len(header);
    if item_type != ItemType::Structure || len % 8 != 0 {
        return Err(DecodeError::BadLength { at: 0, item_type, len });
    }
    let total = HEADER_LEN + len;
    if total > limits.message_len_max {
        return Err(DecodeError::TooLong { len: total, len_max: limits.message_len_max });
    }
    Ok(total)
}

/// Decodes one item that spans all of `bytes`.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Item, DecodeError> {
    if bytes.len() > limits.message_len_max {
        return Err(DecodeError::TooLong { len: bytes.len(), len_max: limits.message_len_max });
    }
    let mut decoder = Decoder { bytes, limits, items: 0 };
    let (item, end) = decoder.item(0, bytes.len(), 1)?;
    if end != bytes.len() {
        return Err(DecodeError::Trailing { at: end, extra: bytes.len() - end });
    }
    Ok(item)
}

fn be_len(header: &[u8]) -> usize {
    // Four bytes always fit a usize on the 64-bit targets this builds for.
    u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize
}

fn check_tag(header: &[u8], at: usize) -> Result<Tag, DecodeError> {
    let tag = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    match header[0] {
        0x42 | 0x54 => Ok(Tag(tag)),
        _ => Err(DecodeError::BadTag { at, tag }),
    }
}

struct Decoder<'a> {
    bytes: &'a [u8],
    limits: &'a Limits,
    items: usize,
}

impl Decoder<'_> {
    /// The item at `at`, which must end by `end`; returns it and the offset after its padding.
    fn item(&mut self, at: usize, end: usize, depth: usize) -> Result<(Item, usize), DecodeError> {
        let header = self.take(at, HEADER_LEN, end)?;
        let tag = check_tag(header, at)?;
        let type_byte = header[3];
        let item_type =
            ItemType::from_byte(type_byte).ok_or(DecodeError::UnknownType { at, type_byte })?;
        let len = be_len(header);
        self.items += 1;
        if self.items > self.limits.items_max {
            return Err(DecodeError::TooManyItems { items_max: self.limits.items_max });
        }
        let body = at + HEADER_LEN;
        let padded_len = padded(len);
        let whole = self.take(body, padded_len, end)?;
        let (value_bytes, padding) = whole.split_at(len);
        if padding.iter().any(|b| *b != 0) {
            return Err(DecodeError::NonZeroPadding { at: body + len });
        }
        let bad_length = DecodeError::BadLength { at, item_type, len };
        let value = match item_type {
            ItemType::Structure => {
                if depth >= self.limits.depth_max {
                    return Err(DecodeError::TooDeep { at, depth_max: self.limits.depth_max });
                }
                Value::Structure(self.children(body, body + len, depth + 1)?)
            }
            ItemType::Integer => {
                Value::Integer(i32::from_be_bytes(array(value_bytes, bad_length)?))
            }
            ItemType::Enumeration => {
                Value::Enumeration(u32::from_be_bytes(array(value_bytes, bad_length)?))
            }
            ItemType::Interval => {
                Value::Interval(u32::from_be_bytes(array(value_bytes, bad_length)?))
            }
            ItemType::LongInteger => {
                Value::LongInteger(i64::from_be_bytes(array(value_bytes, bad_length)?))
            }
            ItemType::DateTime => {
                Value::DateTime(i64::from_be_bytes(array(value_bytes, bad_length)?))
            }
            ItemType::DateTimeExtended => {
                Value::DateTimeExtended(i64::from_be_bytes(array(value_bytes, bad_length)?))
            }
            ItemType::Boolean => match u64::from_be_bytes(array(value_bytes, bad_length)?) {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                value => return Err(DecodeError::BadBoolean { at, value }),
            },
            ItemType::BigInteger => {
                if len == 0 || len % 8 != 0 {
                    return Err(bad_length);
                }
                Value::BigInteger(value_bytes.to_vec())
            }
            ItemType::TextString => match core::str::from_utf8(value_bytes) {
                Ok(text) => Value::TextString(text.to_owned()),
                Err(_) => return Err(DecodeError::NotUtf8 { at }),
            },
            ItemType::ByteString => Value::ByteString(Zeroizing::new(value_bytes.to_vec())),
        };
        Ok((Item { tag, value }, body + padded_len))
    }

    fn children(
        &mut self,
        mut at: usize,
        end: usize,
        depth: usize,
    ) -> Result<Vec<Item>, DecodeError> {
        let mut children = Vec::new();
        while at < end {
            let (child, next) = self.item(at, end, depth)?;
            children.push(child);
            at = next;
        }
        Ok(children)
    }

    /// `len` bytes from `at`, which must all lie before `end` (the enclosing structure's end).
    fn take(&self, at: usize, len: usize, end: usize) -> Result<&[u8], DecodeError> {
        let available = end.saturating_sub(at);
        if len > available {
            return Err(if end < self.bytes.len() {
                DecodeError::StructureOverrun { at }
            } else {
                DecodeError::Truncated { at, needed: len, available }
            });
        }
        Ok(&self.bytes[at..at + len])
    }
}

fn array<const N: usize>(bytes: &[u8], error: DecodeError) -> Result<[u8; N], DecodeError> {
    bytes.try_into().map_err(|_| error)
}

impl fmt::Debug for Item {
    /// One line per item, indented by depth, with tag names where known; byte strings show
    /// only their length, so a whole message can go to a log without its key values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_indented(f, 0)
    }
}

impl Item {
    fn fmt_indented(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        write!(f, "{:indent$}{:?} ", "", self.tag, indent = depth * 2)?;
        match &self.value {
            Value::Structure(children) => {
                writeln!(f, "{{")?;
                for child in children {
                    child.fmt_indented(f, depth + 1)?;
                }
                writeln!(f, "{:indent$}}}", "", indent = depth * 2)
            }
            value => writeln!(f, "{value:?}"),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Structure(children) => write!(f, "Structure({} items)", children.len()),
            Value::Integer(v) => write!(f, "Integer({v})"),
            Value::LongInteger(v) => write!(f, "LongInteger({v})"),
            Value::BigInteger(b) => write!(f, "BigInteger({} bytes)", b.len()),
            Value::Enumeration(v) => write!(f, "Enumeration({v:#010x})"),
            Value::Boolean(v) => write!(f, "Boolean({v})"),
            Value::TextString(s) => write!(f, "TextString({s:?})"),
            Value::ByteString(b) => write!(f, "ByteString({} bytes)", b.len()),
            Value::DateTime(v) => write!(f, "DateTime({v})"),
            Value::Interval(v) => write!(f, "Interval({v})"),
            Value::DateTimeExtended(v) => write!(f, "DateTimeExtended({v})"),
        }
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match tag::name(*self) {
            Some(name) => f.write_str(name),
            None => write!(f, "{:#08x}", self.0),
        }
    }
}
