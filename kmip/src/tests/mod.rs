//! Unit tests: the codec (`ttlv`), then messages and attributes (`message`).

mod message;
mod ttlv;

/// Bytes from hex written with any spacing.
fn hex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("test hex"))
        .collect()
}
