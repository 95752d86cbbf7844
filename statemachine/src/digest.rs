//! Small non-cryptographic digests computed inside `apply`: of a command body (to tell a retry
//! from a reuse of its request ID) and of an impact preview (to confirm it).

use core::hash::Hasher;

use fnv::FnvHasher;
use postcard::ser_flavors::Flavor;
use serde::Serialize;

/// A postcard flavor that hashes instead of storing: no allocation per command.
struct HashingFlavor(FnvHasher);

impl Flavor for HashingFlavor {
    type Output = u64;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.write_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.write(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<u64> {
        Ok(self.0.finish())
    }
}

/// FNV-1a over the postcard encoding of `value`.
pub fn body_digest<T: Serialize>(value: &T) -> u64 {
    // Serializing plain data into a hasher cannot fail: no flavor method returns an error.
    postcard::serialize_with_flavor(value, HashingFlavor(FnvHasher::default())).unwrap_or(0)
}
